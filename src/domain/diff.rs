//! Field-by-field comparison of two versions, as JSON-pointer paths.

use super::Version;
use serde::Serialize;
use serde_json::Value;

/// One difference: the value at `path` in the first and in the second document
/// (`null` when absent on that side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    pub from: Value,
    pub to: Value,
}

/// What a diff compares: the content of a version, not its identity or timestamps.
fn comparable(v: &Version) -> Value {
    serde_json::json!({
        "upstreams": v.upstreams,
        "config": v.config,
        "description": v.description,
        "author": v.author,
        "digest": v.digest,
        "state": v.state,
    })
}

/// Differences between two versions, in path order.
pub fn diff_versions(a: &Version, b: &Version) -> Vec<Change> {
    let mut out = Vec::new();
    diff_values(&mut String::new(), &comparable(a), &comparable(b), &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Walks two JSON values; objects are compared key by key (sorted), arrays element
/// by element, anything else as a whole.
pub fn diff_values(path: &mut String, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(k));
                diff_values(
                    path,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                diff_values(
                    path,
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    out,
                );
                path.truncate(len);
            }
        }
        _ if a == b => {}
        _ => out.push(Change {
            path: path.clone(),
            from: a.clone(),
            to: b.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_changes_have_pointer_paths() {
        let a = json!({"config": {"model": "m1", "tools": ["a", "b"], "a/b": 1}, "x": 1});
        let b = json!({"config": {"model": "m2", "tools": ["a"], "a/b": 2, "new": true}, "x": 1});
        let mut out = Vec::new();
        diff_values(&mut String::new(), &a, &b, &mut out);
        let paths: Vec<_> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/config/a~1b",
                "/config/model",
                "/config/new",
                "/config/tools/1"
            ]
        );
        assert_eq!(out[1].from, json!("m1"));
        assert_eq!(out[1].to, json!("m2"));
        assert_eq!(out[3].to, Value::Null);
    }

    #[test]
    fn equal_values_have_no_changes() {
        let a = json!({"k": [1, {"z": null}]});
        let mut out = Vec::new();
        diff_values(&mut String::new(), &a, &a.clone(), &mut out);
        assert!(out.is_empty());
    }
}
