//! The access log: one line per call, written by the server's end-of-call hook
//! (`layers::ServedCall`) straight into the log writer.
//!
//! Every other line is a `tracing` event; this one is not, because it is written for every
//! call. As an event it went through the dispatcher, the per-layer filters, the field visitor
//! and a look-up of the call's span for its ids: more instructions than the line's own text,
//! and most of what the access log added to a SayHello (callgrind; docs/performance-log.md). It
//! still reads exactly as the formatting layer writes an event, in text or JSON, with the
//! call's `trace_id` and `span_id` first (written by the same pieces of `line`; a test holds
//! the two side by side), and `RUST_LOG` still decides whether it is written, by its name,
//! `meshwork::access`, as for any target. `RUST_LOG` is read once, at start-up; a span-scoped
//! directive (`[name]=info`) selects no line here, as for every other line (the log output sees
//! no spans).

use std::{cell::RefCell, io::Write as _, time::Duration};

use opentelemetry::trace::SpanContext;
use tracing::Level;
use tracing_subscriber::{
    EnvFilter,
    fmt::{MakeWriter, format::Writer, time::FormatTime},
    layer::SubscriberExt,
};

use super::{
    ACCESS_LOG,
    line::{
        CachedTime, CallIds, LineFormat, MAX_THOUSANDTHS, THOUSANDTHS_LEN, level_pieces, prints_bare,
        write_thousandths,
    },
    log_writer::LogWriter,
};

/// Where access lines go and how they read; made once, by `telemetry::init`, when `RUST_LOG`
/// lets the access log through ([`enabled_by`]).
pub struct AccessLog {
    writer: LogWriter,
    format: LineFormat,
}

/// One call, as its access line tells it.
#[derive(Debug)]
pub struct AccessLine<'a> {
    /// `user.v1.UserService/GetUser`, or `unknown`.
    pub method: &'static str,
    /// The code's name, `OK`, `NotFound`.
    pub code: &'static str,
    /// From the request's arrival to the end of the response; printed in milliseconds, to
    /// whole microseconds.
    pub duration: Duration,
    /// The caller's address, when the call came over a connection: a socket address, as
    /// `Display` writes it (nothing in it needs quoting).
    pub peer: Option<&'a str>,
    /// The call's trace and span ids.
    pub ids: Option<SpanContext>,
}

thread_local! {
    /// The line being written, kept between calls: no allocation per line.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether `rust_log` lets the access log's lines through: `info` does, `warn` and
/// `info,meshwork::access=off` do not, `warn,meshwork::access=info` does. Asked of a
/// subscriber with that filter alone: asking the process's, whose filters are per layer,
/// outside an event would drop the thread's next line (tokio-rs/tracing#2519).
pub(super) fn enabled_by(rust_log: &str) -> bool {
    let filter = EnvFilter::builder()
        .parse(rust_log)
        .expect("RUST_LOG was validated when the configuration was parsed");
    let subscriber = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(
        subscriber,
        || tracing::event_enabled!(target: ACCESS_LOG, Level::INFO),
    )
}

impl AccessLog {
    pub(super) fn new(writer: LogWriter, format: LineFormat) -> Self {
        Self { writer, format }
    }

    /// Writes `call`'s line.
    pub fn write(&self, call: &AccessLine<'_>) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            match self.format {
                LineFormat::Text { ansi } => text(line, call, ansi),
                LineFormat::Json => json(line, call),
            }
            // A failing stdout cannot be reported anywhere (the writer says so too).
            let _ = self.writer.make_writer().write_all(line.as_bytes());
        });
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// `trace_id=… span_id=… 2026-12-07T05:47:57.320971Z  INFO meshwork::access: rpc method=…
/// code=OK duration_ms=0.286 peer=127.0.0.1:35278`, as `TextLine` under `WithTraceIds`
/// writes the event.
fn text(line: &mut String, call: &AccessLine<'_>, ansi: bool) {
    if let Some(ids) = &call.ids {
        CallIds::of(ids)
            .text_prefix()
            .iter()
            .for_each(|piece| line.push_str(piece));
    }
    timestamp(line);
    level_pieces(Level::INFO, ansi)
        .iter()
        .for_each(|piece| line.push_str(piece));
    line.push_str(ACCESS_LOG);
    line.push_str(": rpc");
    text_field(line, "method", call.method);
    text_field(line, "code", call.code);
    let mut digits = [0; THOUSANDTHS_LEN];
    text_field(line, "duration_ms", millis(call.duration, &mut digits));
    if let Some(peer) = call.peer {
        text_field(line, "peer", peer);
    }
    line.push('\n');
}

/// `{"trace_id":…,"span_id":…,"timestamp":…,"level":"INFO","message":"rpc","method":…,
/// "code":…,"duration_ms":0.286,"peer":…,"target":"meshwork::access"}`, as the JSON format
/// under `WithTraceIds` writes the event.
fn json(line: &mut String, call: &AccessLine<'_>) {
    line.push('{');
    if let Some(ids) = &call.ids {
        CallIds::of(ids)
            .json_keys()
            .iter()
            .for_each(|piece| line.push_str(piece));
    }
    line.push_str("\"timestamp\":\"");
    timestamp(line);
    line.push_str("\",\"level\":\"INFO\",\"message\":\"rpc\",\"method\":");
    json_string(line, call.method);
    line.push_str(",\"code\":");
    json_string(line, call.code);
    let mut digits = [0; THOUSANDTHS_LEN];
    line.push_str(",\"duration_ms\":");
    line.push_str(millis(call.duration, &mut digits));
    if let Some(peer) = call.peer {
        line.push_str(",\"peer\":");
        json_string(line, peer);
    }
    line.push_str(",\"target\":\"");
    line.push_str(ACCESS_LOG);
    line.push_str("\"}\n");
}

/// ` name=value`, as `line::write_field` writes a value that needs no quotes. Every value of
/// an access line is one (a method's or a code's name, digits, a socket address), so the
/// scan of each value for characters to quote is left to debug builds.
fn text_field(line: &mut String, name: &str, value: &str) {
    debug_assert!(prints_bare(value), "{value:?} would need quotes");
    for piece in [" ", name, "=", value] {
        line.push_str(piece);
    }
}

/// `"value"`: a JSON string of a value that needs no escaping (every access-line value; see
/// [`text_field`]).
fn json_string(line: &mut String, value: &str) {
    debug_assert!(prints_bare(value), "{value:?} would need escaping");
    for piece in ["\"", value, "\""] {
        line.push_str(piece);
    }
}

/// The time now, as both formats' timestamps read.
fn timestamp(line: &mut String) {
    let _ = CachedTime.format_time(&mut Writer::new(line));
}

/// `duration` in milliseconds, to whole microseconds: `0.056`, `12.5`, `3.0` (as the event's
/// `duration_ms`, an `f64` of whole microseconds over 1e3, printed). Past 31 years, that.
fn millis(duration: Duration, digits: &mut [u8; THOUSANDTHS_LEN]) -> &str {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(MAX_THOUSANDTHS);
    write_thousandths(micros, digits)
}

#[cfg(test)]
mod tests {
    use meshwork_rpc::trace::{self, CALL_SPANS};

    use super::*;
    use crate::telemetry::{captured::CapturedLines, log_lines};

    /// `line` with its timestamp (`2026-12-07T05:47:57.320971Z`) replaced by `<time>`.
    fn without_timestamp(line: &str) -> String {
        let bytes = line.as_bytes();
        let at = (0..bytes.len().saturating_sub(26))
            .find(|&i| {
                bytes[i..i + 4].iter().all(u8::is_ascii_digit)
                    && bytes[i + 4] == b'-'
                    && bytes[i + 10] == b'T'
                    && bytes[i + 26] == b'Z'
            })
            .unwrap_or_else(|| panic!("no timestamp in {line}"));
        format!("{}<time>{}", &line[..at], &line[at + 27..])
    }

    /// The access line as a `tracing` event inside a call writes it, and as
    /// [`AccessLog`] writes it, for the same call.
    fn both_ways(
        format: LineFormat,
        in_a_call: bool,
        duration: Duration,
        peer: Option<&str>,
    ) -> (String, String) {
        let lines = CapturedLines::default();
        let subscriber = tracing_subscriber::registry().with(log_lines(format, lines.clone()));
        let (method, code) = ("user.v1.UserService/GetUser", "NotFound");
        let ids = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: CALL_SPANS, "grpc.server");
            let call = trace::continue_trace(span, opentelemetry::Context::new());
            let log = || {
                tracing::info!(
                    target: ACCESS_LOG,
                    method,
                    code,
                    duration_ms = duration.as_micros() as f64 / 1e3,
                    peer,
                    "rpc"
                );
            };
            if !in_a_call {
                log();
                return None;
            }
            call.in_scope(log);
            call.ids()
        });
        assert_eq!(ids.is_some(), in_a_call);
        let as_event = lines.take();
        // Through the log writer, as in the services: its guard writes the line out when dropped.
        let (writer, written) = LogWriter::spawn(lines.clone()).unwrap();
        AccessLog::new(writer, format).write(&AccessLine {
            method,
            code,
            duration,
            peer,
            ids,
        });
        drop(written);
        (without_timestamp(&as_event), without_timestamp(&lines.take()))
    }

    #[test]
    fn the_line_reads_as_the_formatting_layer_writes_the_event() {
        let formats = [
            LineFormat::Text { ansi: false },
            LineFormat::Text { ansi: true },
            LineFormat::Json,
        ];
        let durations = [0, 56, 286, 3_000, 12_500, 1_234_567].map(Duration::from_micros);
        for format in formats {
            for in_a_call in [true, false] {
                for duration in durations {
                    for peer in [Some("127.0.0.1:35278"), Some("[fe80::1%2]:80"), None] {
                        let (as_event, written) = both_ways(format, in_a_call, duration, peer);
                        assert_eq!(written, as_event, "{format:?} {duration:?} {peer:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_text_line_in_a_call_starts_with_its_ids() {
        let (_, line) = both_ways(
            LineFormat::Text { ansi: false },
            true,
            Duration::from_micros(286),
            Some("127.0.0.1:5"),
        );
        let (ids, rest) = line.split_at(67);
        assert!(
            ids.starts_with("trace_id=") && ids.contains(" span_id="),
            "{line}"
        );
        assert_eq!(
            rest,
            "<time>  INFO meshwork::access: rpc method=user.v1.UserService/GetUser code=NotFound duration_ms=0.286 peer=127.0.0.1:5\n"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_the_calls_fields() {
        let (_, line) = both_ways(LineFormat::Json, true, Duration::from_micros(3_000), None);
        let object: serde_json::Value = serde_json::from_str(&line.replace("<time>", "t")).unwrap();
        assert_eq!(object["message"], "rpc");
        assert_eq!(object["target"], ACCESS_LOG);
        assert_eq!(object["duration_ms"], 3.0);
        assert_eq!(object["trace_id"].as_str().map(str::len), Some(32));
        assert!(object.get("peer").is_none(), "{line}");
    }

    #[test]
    fn rust_log_decides_whether_the_access_log_is_written() {
        for (rust_log, enabled) in [
            ("info", true),
            ("debug", true),
            ("meshwork=info", true),
            ("meshwork=debug", true),
            ("meshwork::access=warn", false),
            ("warn,[grpc.server]=info", false),
            ("warn,meshwork::access=info", true),
            ("warn", false),
            ("info,meshwork::access=off", false),
            ("off", false),
            ("meshwork::server=info", false),
        ] {
            assert_eq!(enabled_by(rust_log), enabled, "RUST_LOG={rust_log}");
        }
    }
}
