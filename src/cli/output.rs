//! How answers are shown: aligned tables by default, the API's JSON with `--json`,
//! and the confirmation prompt for protected moves.

use super::ClientOpts;
use anyhow::{bail, Result};
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};

/// Asks before a protected move, unless `--yes`. Without a terminal and without
/// `--yes` it refuses rather than hang.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: this environment is protected; pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

/// Renders the array `v[key]` as a table with the given (header, field) columns.
pub fn rows_table(v: &Value, key: &str, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| columns.iter().map(|(_, f)| cell(&item[*f])).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    table(&header, &rows)
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The answer as JSON (`--json`) or as a table of `v[key]`.
pub fn show(c: &ClientOpts, v: &Value, key: &str, columns: &[(&str, &str)]) {
    if c.json {
        print_json(v);
    } else {
        print!("{}", rows_table(v, key, columns));
    }
}

pub fn move_line(v: &Value) -> String {
    let weight = match v["weight"].as_f64() {
        Some(w) => format!(" at {w} %"),
        None => String::new(),
    };
    format!(
        "{} {}/{}: {} → {}{weight} (revision {})",
        cell(&v["action"]),
        cell(&v["agent"]),
        cell(&v["environment"]),
        cell(&v["previous"]),
        cell(&v["version"]),
        cell(&v["revision"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!("v1")), "v1");
        assert_eq!(cell(&json!(3)), "3");
    }
}
