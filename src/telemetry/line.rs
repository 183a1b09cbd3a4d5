//! The log line formats: [`WithTraceIds`] puts a call's ids first in any format, and
//! [`TextLine`] is the text format.

use std::fmt;

use meshwork_rpc::trace;
use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// A log line format that puts the current span's OpenTelemetry `trace_id` and `span_id`
/// first: as the first two keys of a JSON object, or as a `trace_id=… span_id=…` prefix.
pub(super) struct WithTraceIds<F> {
    pub(super) inner: F,
    pub(super) json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // The current span from the dispatcher, not `ctx`: this output sees no spans.
        let Some(ids) = trace::ids(&tracing::Span::current()) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Hex by table: `{:032x}` through the formatter cost a fifth of a line.
        let (mut trace_hex, mut span_hex) = ([0; 32], [0; 16]);
        let trace_id = hex(&ids.trace_id().to_bytes(), &mut trace_hex);
        let span_id = hex(&ids.span_id().to_bytes(), &mut span_hex);
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // `line` is one JSON object: `{"timestamp":...}`. Splice the ids in after the brace.
        let rest = line.strip_prefix('{').unwrap_or(&line);
        write!(
            writer,
            "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
        )
    }
}

/// `bytes` in lowercase hex, written into `out` (twice as long).
fn hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// The text line: `2026-12-02T02:11:23.127100Z  INFO meshwork::access: rpc code=OK ...`, as
/// tracing-subscriber's default format prints it, written more cheaply: one access line per
/// call made the default format's field styling (a no-op `Style` per name and `=` when not
/// on a terminal) and `Debug`-escaping of every string, character by character, cost more
/// than the rest of a call's middleware (callgrind; docs/benchmarks.md). A value that needs
/// quoting (a space, a quote, a control character) is still printed as `Debug` prints it.
pub(super) struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let metadata = event.metadata();
        let (colour, name) = level_label(*metadata.level());
        if writer.has_ansi_escapes() {
            write!(writer, " {colour}{name}\x1b[0m ")?;
        } else {
            write!(writer, " {name} ")?;
        }
        writer.write_str(metadata.target())?;
        writer.write_char(':')?;
        let mut fields = TextFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// A level's ANSI colour and its name, padded to five characters as the default format does.
fn level_label(level: Level) -> (&'static str, &'static str) {
    match level {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    }
}

/// Writes an event's fields: the message as it is, the others as ` name=value`.
struct TextFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = match field.name() {
            "message" => write!(self.writer, " {value}"),
            name if prints_bare(value) => write!(self.writer, " {name}={value}"),
            name => write!(self.writer, " {name}={value:?}"),
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = match field.name() {
            "message" => write!(self.writer, " {value:?}"),
            // What `log` records carry about themselves, which the line already says.
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.writer, " {name}={value:?}"),
        };
    }
}

/// Whether a string value reads unambiguously without quotes: visible ASCII, no quote or
/// backslash.
fn prints_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn line_of(log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(TextLine)
                .with_ansi(false)
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_line_reads_as_the_default_format_does() {
        let line = line_of(
            || tracing::info!(target: "meshwork::access", method = "user.v1.UserService/GetUser", code = "OK", duration_ms = 0.146, peer = %"127.0.0.1:5", "rpc"),
        );
        let (_timestamp, rest) = line.split_once(' ').unwrap();
        assert_eq!(
            rest,
            " INFO meshwork::access: rpc method=user.v1.UserService/GetUser code=OK duration_ms=0.146 peer=127.0.0.1:5\n"
        );
    }

    #[test]
    fn ids_are_written_as_w3c_spells_them() {
        let id = opentelemetry::trace::TraceId::from(0x0af7651916cd43dd8448eb211c80319cu128);
        assert_eq!(hex(&id.to_bytes(), &mut [0; 32]), id.to_string());
        assert_eq!(hex(&[0, 1, 0xfe], &mut [0; 6]), "0001fe");
    }

    #[test]
    fn a_value_that_needs_quotes_gets_them() {
        let line = line_of(|| tracing::warn!(name = "Ada \"Countess\" Lovelace\n", "odd"));
        assert!(
            line.ends_with(
                r#" WARN meshwork::telemetry::line::tests: odd name="Ada \"Countess\" Lovelace\n"
"#
            ),
            "{line}"
        );
    }
}
