//! The access log: one line per client request on stderr, laid out like the other log
//! lines (`tracing`'s human or JSON format, `[log] format`; never in colour) and subject
//! to the same filter (target `switchyard::access`, level INFO), but formatted here,
//! directly into a reused per-thread buffer.
//!
//! Written here, the line costs a small fraction of what `tracing`'s formatter cost
//! (the figures are in the README's Performance section). The
//! fields are known and few, so the line is written field by field: a timestamp whose
//! date and time of day are cached per second, integers, and strings quoted as they
//! are unless they need escaping (then `Debug` for the human layout, JSON for JSON).
//!
//! A worker thread ([`buffer_this_thread`]) gathers its lines and writes them when it has
//! nothing else to do ([`flush`], from the runtime's park hook) or when 32 KiB have
//! gathered: under load one `write` carries many lines, and when idle a line is out as
//! soon as its request is. (Within a busy stretch a worker's access lines can therefore
//! come after its other log lines about later requests.) Other threads write each line
//! at once. Every write is under stderr's lock, as `tracing` writes its own lines: the
//! two never interleave within a line.

use crate::config::{LogConfig, LogFormat};
use crate::envelope::{push_json_str, push_plain_str};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether and how requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Human,
    Json,
}

impl AccessLog {
    pub fn from_config(log: &LogConfig) -> Self {
        match (log.access_log, log.format) {
            (false, _) => Self::Off,
            (true, LogFormat::Human) => Self::Human,
            (true, LogFormat::Json) => Self::Json,
        }
    }

    pub fn is_on(self) -> bool {
        self != Self::Off
    }

    /// Writes the line for `e` (or gathers it, on a worker thread), unless the log
    /// filter leaves out the access log.
    pub fn emit(self, e: &Entry<'_>) {
        if self == Self::Off || !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        // `try_`: never a panic in a `Drop`, not even while the thread is ending
        let _ = PENDING.try_with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return;
            };
            let Pending { lines, gather } = &mut *p;
            if self.push(e, SystemTime::now(), lines, *gather) {
                write_out(lines);
            }
        });
    }

    /// Appends the line for `e`; whether the lines gathered should be written now.
    fn push(self, e: &Entry<'_>, now: SystemTime, lines: &mut String, buffered: bool) -> bool {
        self.format(e, now, lines);
        !buffered || lines.len() >= FLUSH_AT
    }

    fn format(self, e: &Entry<'_>, now: SystemTime, out: &mut String) {
        match self {
            Self::Off => {}
            Self::Human => {
                timestamp(now, out);
                out.push_str("  INFO ");
                out.push_str(TARGET);
                out.push_str(": request");
                for (name, v) in e.fields() {
                    out.push(' ');
                    out.push_str(name);
                    out.push('=');
                    match v {
                        Value::Str(s) => human_str(s, out),
                        Value::Int(n) => push_int(n, out),
                    }
                }
                if let Some(p) = e.pinned {
                    out.push_str(" pinned=");
                    out.push_str(p);
                }
                out.push('\n');
            }
            Self::Json => {
                out.push_str("{\"timestamp\":\"");
                timestamp(now, out);
                out.push_str("\",\"level\":\"INFO\",\"message\":\"request\"");
                for (name, v) in e.fields() {
                    out.push_str(",\"");
                    out.push_str(name);
                    out.push_str("\":");
                    match v {
                        Value::Str(s) => push_json_str(s, out),
                        Value::Int(n) => push_int(n, out),
                    }
                }
                if let Some(p) = e.pinned {
                    out.push_str(",\"pinned\":\"");
                    out.push_str(p);
                    out.push('"');
                }
                out.push_str(",\"target\":\"");
                out.push_str(TARGET);
                out.push_str("\"}\n");
            }
        }
    }
}

const TARGET: &str = "switchyard::access";

/// What one access-log line says.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub agent: &'a str,
    pub environment: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub duration_us: u64,
    pub upstream: &'a str,
    pub bytes: u64,
    /// `evaluation` or `session` when a pin chose the version (the field is left out
    /// otherwise).
    pub pinned: Option<&'static str>,
}

enum Value<'a> {
    Str(&'a str),
    Int(u64),
}

impl<'a> Entry<'a> {
    /// The fields in the order the line carries them.
    fn fields(&self) -> [(&'static str, Value<'a>); 9] {
        [
            ("request_id", Value::Str(self.request_id)),
            ("method", Value::Str(self.method)),
            ("agent", Value::Str(self.agent)),
            ("environment", Value::Str(self.environment)),
            ("version", Value::Str(self.version)),
            ("status", Value::Int(u64::from(self.status))),
            ("duration_us", Value::Int(self.duration_us)),
            ("upstream.addr", Value::Str(self.upstream)),
            ("bytes", Value::Int(self.bytes)),
        ]
    }
}

/// A worker writes its gathered lines once they reach this size, idle or not.
const FLUSH_AT: usize = 32 * 1024;

/// Makes the calling thread gather its access-log lines until [`flush`].
pub fn buffer_this_thread() {
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.gather = true;
        }
    });
}

/// Writes the lines the calling thread has gathered.
pub fn flush() {
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if !p.lines.is_empty() {
                write_out(&mut p.lines);
            }
        }
    });
}

fn write_out(lines: &mut String) {
    // like tracing's own writer: a failed write to stderr is not the request's
    let _ = std::io::stderr().lock().write_all(lines.as_bytes());
    lines.clear();
}

/// A thread's access-log lines not written yet.
struct Pending {
    /// One line at most on a thread that does not gather; the capacity is kept from
    /// one request to the next.
    lines: String,
    /// Set by [`buffer_this_thread`].
    gather: bool,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending {
        lines: String::with_capacity(512),
        gather: false,
    });
    /// `YYYY-MM-DDTHH:MM:SS` of the second the last line was written in.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 in UTC with microseconds, as `tracing`'s formatter writes it.
fn timestamp(now: SystemTime, out: &mut String) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND
        .try_with(|cached| {
            let Ok(mut cached) = cached.try_borrow_mut() else {
                return false;
            };
            if cached.0 != secs {
                cached.1.clear();
                date_time(secs, &mut cached.1);
                cached.0 = secs;
            }
            out.push_str(&cached.1);
            true
        })
        .unwrap_or(false);
    if !cached {
        date_time(secs, out);
    }
    let _ = write!(out, ".{:06}Z", since.subsec_micros());
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC.
fn date_time(secs: u64, out: &mut String) {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

fn push_int(n: u64, out: &mut String) {
    let _ = write!(out, "{n}");
}

/// A string as `tracing`'s human layout shows it: `Debug`, quoted.
fn human_str(s: &str, out: &mut String) {
    if !push_plain_str(s, out) {
        let _ = write!(out, "{s:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry<'a>(request_id: &'a str, upstream: &'a str) -> Entry<'a> {
        Entry {
            pinned: None,
            request_id,
            method: "GET",
            agent: "bot",
            environment: "staging",
            version: "v3",
            status: 200,
            duration_us: 360,
            upstream,
            bytes: 2,
        }
    }

    /// 2026-12-01T21:26:30.563777Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_796_160_390_563_777)
    }

    fn line(log: AccessLog, e: &Entry<'_>, now: SystemTime) -> String {
        let mut out = String::new();
        log.format(e, now, &mut out);
        out
    }

    #[test]
    fn the_human_line_is_tracings_layout() {
        let l = line(AccessLog::Human, &entry("abc-1", "127.0.0.1:28080"), at());
        assert_eq!(
            l,
            "2026-12-01T21:26:30.563777Z  INFO switchyard::access: request request_id=\"abc-1\" \
             method=\"GET\" agent=\"bot\" environment=\"staging\" version=\"v3\" status=200 \
             duration_us=360 upstream.addr=\"127.0.0.1:28080\" bytes=2\n"
        );
    }

    #[test]
    fn the_json_line_is_tracings_layout() {
        let l = line(AccessLog::Json, &entry("abc-1", "[::1]:8080"), at());
        assert_eq!(
            l,
            "{\"timestamp\":\"2026-12-01T21:26:30.563777Z\",\"level\":\"INFO\",\"message\":\"request\",\
             \"request_id\":\"abc-1\",\"method\":\"GET\",\"agent\":\"bot\",\"environment\":\"staging\",\
             \"version\":\"v3\",\"status\":200,\"duration_us\":360,\"upstream.addr\":\"[::1]:8080\",\
             \"bytes\":2,\"target\":\"switchyard::access\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["upstream.addr"], "[::1]:8080");
    }

    #[test]
    fn strings_that_need_it_are_escaped() {
        let odd = "a\"b\\c\nd\u{7f}é";
        let v: serde_json::Value =
            serde_json::from_str(&line(AccessLog::Json, &entry(odd, "-"), at())).unwrap();
        assert_eq!(v["request_id"], odd);
        let h = line(AccessLog::Human, &entry(odd, "-"), at());
        assert!(h.contains(&format!("request_id={odd:?} ")), "{h}");
        assert_eq!(
            h.lines().count(),
            1,
            "a newline inside a field split the line"
        );
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        let next = at() + Duration::from_micros(436_223);
        let a = line(AccessLog::Json, &entry("a", "-"), at());
        let b = line(AccessLog::Json, &entry("a", "-"), next);
        let c = line(AccessLog::Json, &entry("a", "-"), at());
        assert!(a.contains("\"2026-12-01T21:26:30.563777Z\""), "{a}");
        assert!(b.contains("\"2026-12-01T21:26:31.000000Z\""), "{b}");
        assert!(c.contains("\"2026-12-01T21:26:30.563777Z\""), "{c}");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(line(AccessLog::Human, &entry("a", "-"), leap)
            .starts_with("2000-02-29T00:00:00.000000Z  INFO"));
    }

    #[test]
    fn a_worker_gathers_lines_until_enough_for_one_write() {
        let e = entry("abc-1", "127.0.0.1:28080");
        let mut lines = String::new();
        assert!(
            AccessLog::Json.push(&e, at(), &mut lines, false),
            "not gathering"
        );
        let one = lines.len();
        lines.clear();
        let mut pushed = 0;
        while !AccessLog::Json.push(&e, at(), &mut lines, true) {
            pushed += 1;
            assert!(pushed < 1_000, "never asked to write");
        }
        assert_eq!(pushed + 1, FLUSH_AT.div_ceil(one));
        assert_eq!(lines.lines().count(), pushed + 1, "every line kept, whole");
        assert!(lines
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    #[test]
    fn the_config_chooses_the_layout() {
        let mut c = LogConfig::default();
        assert_eq!(AccessLog::from_config(&c), AccessLog::Human);
        c.format = LogFormat::Json;
        assert_eq!(AccessLog::from_config(&c), AccessLog::Json);
        c.access_log = false;
        assert_eq!(AccessLog::from_config(&c), AccessLog::Off);
        assert!(!AccessLog::Off.is_on());
        assert_eq!(line(AccessLog::Off, &entry("a", "-"), at()), "");
    }
}
