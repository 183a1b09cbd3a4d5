//! The log line formats: [`WithTraceIds`] puts a call's ids first in any format,
//! [`TextLine`] is the text format, and [`CachedTime`] writes both formats' timestamps. The
//! access log writes its lines with the same pieces ([`CallIds`], [`level_pieces`],
//! [`CachedTime`]), so that they read as every other line does.

use std::{cell::Cell, fmt, time::UNIX_EPOCH};

use meshwork_rpc::trace;
use opentelemetry::trace::SpanContext;
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

/// How every line reads: text (coloured only on a terminal) or one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineFormat {
    Text { ansi: bool },
    Json,
}

/// A log line format that puts the running call's `trace_id` and `span_id` (see
/// `meshwork_rpc::trace`) first: as the first two keys of a JSON object, or as a
/// `trace_id=… span_id=…` prefix.
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
        // The running call's, not `ctx`'s current span: this output sees no spans.
        let Some(ids) = trace::current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let ids = CallIds::of(&ids);
        if !self.json {
            ids.text_prefix()
                .iter()
                .try_for_each(|piece| writer.write_str(piece))?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // `line` is one JSON object: `{"timestamp":...}`. Splice the ids in after the brace.
        let rest = line.strip_prefix('{').unwrap_or(&line);
        writer.write_char('{')?;
        ids.json_keys()
            .iter()
            .try_for_each(|piece| writer.write_str(piece))?;
        writer.write_str(rest)
    }
}

/// A call's trace and span ids in lowercase hex, as every line logged in the call starts
/// with them. Hex by table: `{:032x}` through the formatter cost a fifth of a line.
pub(super) struct CallIds {
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

impl CallIds {
    pub(super) fn of(ids: &SpanContext) -> Self {
        let mut hex_ids = Self {
            trace_id: [0; 32],
            span_id: [0; 16],
        };
        hex(&ids.trace_id().to_bytes(), &mut hex_ids.trace_id);
        hex(&ids.span_id().to_bytes(), &mut hex_ids.span_id);
        hex_ids
    }

    /// `trace_id=… span_id=… `: a text line's start.
    pub(super) fn text_prefix(&self) -> [&str; 5] {
        ["trace_id=", self.trace_id(), " span_id=", self.span_id(), " "]
    }

    /// `"trace_id":"…","span_id":"…",`: a JSON line's first keys, after its `{`.
    pub(super) fn json_keys(&self) -> [&str; 5] {
        [
            "\"trace_id\":\"",
            self.trace_id(),
            "\",\"span_id\":\"",
            self.span_id(),
            "\",",
        ]
    }

    fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("hex digits are ASCII")
    }

    fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).expect("hex digits are ASCII")
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

/// The text line: `2026-12-02T02:11:23.127100Z  INFO meshwork::server: listening tls=false`, as
/// tracing-subscriber's default format prints it, written more cheaply: when the access line
/// was an event, the default format's field styling (a no-op `Style` per name and `=` when not
/// on a terminal) and `Debug`-escaping of every string, character by character, cost more than
/// the rest of a call's middleware (callgrind; docs/performance-log.md). A value that needs
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
        CachedTime.format_time(&mut writer)?;
        let metadata = event.metadata();
        let level = level_pieces(*metadata.level(), writer.has_ansi_escapes());
        level.iter().try_for_each(|piece| writer.write_str(piece))?;
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

/// ` INFO ` between the timestamp and the target: the level's name padded to five
/// characters, as the default format does, and coloured on a terminal.
pub(super) fn level_pieces(level: Level, ansi: bool) -> [&'static str; 4] {
    let (colour, name) = match level {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    };
    if ansi {
        [" ", colour, name, "\x1b[0m "]
    } else {
        [" ", name, " ", ""]
    }
}

/// ` name=value`: the value bare when it reads unambiguously so, or quoted as `Debug` quotes
/// it. Piece by piece: through `write!`, the formatter cost half an access line.
pub(super) fn write_field(out: &mut impl fmt::Write, name: &str, value: &str) -> fmt::Result {
    if !prints_bare(value) {
        return write!(out, " {name}={value:?}");
    }
    [" ", name, "=", value]
        .iter()
        .try_for_each(|piece| out.write_str(piece))
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
            "message" => self.pieces(&[" ", value]),
            name => write_field(self.writer, name, value),
        };
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.result.is_err() {
            return;
        }
        let mut digits = [0; THOUSANDTHS_LEN];
        match (field.name(), thousandths(value, &mut digits)) {
            ("message", _) | (_, None) => self.record_debug(field, &value),
            // Milliseconds of whole microseconds: printed as `Debug` would print them,
            // without the shortest-digits search of float formatting.
            (name, Some(text)) => self.result = self.pieces(&[" ", name, "=", text]),
        }
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

impl TextFields<'_, '_> {
    fn pieces(&mut self, pieces: &[&str]) -> fmt::Result {
        pieces.iter().try_for_each(|piece| self.writer.write_str(piece))
    }
}

/// The longest text [`thousandths`] writes: 12 digits, a point and 3 digits.
pub(super) const THOUSANDTHS_LEN: usize = 16;
/// The most thousandths that fit in [`THOUSANDTHS_LEN`].
pub(super) const MAX_THOUSANDTHS: u64 = 999_999_999_999_999;

/// `value` as `{:?}` prints it, when it is a whole number of thousandths below 10¹² (a
/// duration in milliseconds made from whole microseconds): `0.056`, `12.5`, `3.0`. Then that
/// decimal is the shortest one that reads back as `value` (two such decimals differ by at
/// least 0.001, far more than a double's spacing there), which is what `Debug` prints.
/// `None` for any other value.
fn thousandths(value: f64, out: &mut [u8; THOUSANDTHS_LEN]) -> Option<&str> {
    if !(value.is_sign_positive() && value < 1e12) {
        return None;
    }
    let scaled = (value * 1e3).round();
    if scaled / 1e3 != value {
        return None;
    }
    // Exact: a whole number below 2^53.
    Some(write_thousandths(scaled as u64, out))
}

/// `scaled` thousandths as [`thousandths`] writes them: `56` is `0.056`, `3000` is `3.0`;
/// at most [`MAX_THOUSANDTHS`] (more is written as that).
pub(super) fn write_thousandths(scaled: u64, out: &mut [u8; THOUSANDTHS_LEN]) -> &str {
    let scaled = scaled.min(MAX_THOUSANDTHS);
    let (whole, mut fraction) = (scaled / 1000, scaled % 1000);
    let mut end = out.len();
    let mut fraction_digits = 3;
    if fraction == 0 {
        fraction_digits = 1;
    } else {
        while fraction % 10 == 0 {
            fraction /= 10;
            fraction_digits -= 1;
        }
    }
    for _ in 0..fraction_digits {
        end -= 1;
        out[end] = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    end -= 1;
    out[end] = b'.';
    let mut whole = whole;
    loop {
        end -= 1;
        out[end] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    std::str::from_utf8(&out[end..]).expect("digits and a point are ASCII")
}

/// tracing-subscriber's [`SystemTime`] timestamp, `2026-12-02T02:11:23.127100Z` (UTC,
/// microseconds), with the date and time of day formatted once per second per thread
/// instead of on every line: through the formatter, they cost a fifth of an access line
/// (callgrind). Times its fast path does not cover (before 1970, after 9999) are left to
/// [`SystemTime`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CachedTime;

/// `YYYY-MM-DDTHH:MM:SS.`: everything before the microseconds.
type SecondText = [u8; 20];

thread_local! {
    /// The second last formatted on this thread, since the epoch, and its text.
    static LAST_SECOND: Cell<(u64, SecondText)> = const { Cell::new((u64::MAX, [0; 20])) };
}

impl CachedTime {
    /// The time now, `2026-12-02T02:11:23.127100Z`; `None` outside the years 1970 to 9999.
    pub(super) fn now() -> Option<[u8; 27]> {
        /// 10000-01-01T00:00:00Z.
        const YEAR_10000: u64 = 253_402_300_800;
        let since_epoch = match std::time::SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() < YEAR_10000 => since,
            _ => return None,
        };
        let second = since_epoch.as_secs();
        let text = match LAST_SECOND.get() {
            (cached, text) if cached == second => text,
            _ => {
                let text = second_text(second);
                LAST_SECOND.set((second, text));
                text
            }
        };
        let mut line = [0; 27];
        line[..20].copy_from_slice(&text);
        let mut micros = since_epoch.subsec_micros();
        for digit in line[20..26].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        line[26] = b'Z';
        Some(line)
    }
}

impl FormatTime for CachedTime {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        match Self::now() {
            Some(now) => {
                writer.write_str(std::str::from_utf8(&now).expect("digits and separators are ASCII"))
            }
            None => SystemTime.format_time(writer),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (UTC; years 1970 to 9999), by the
/// civil-from-days algorithm (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn second_text(second: u64) -> SecondText {
    let (days, in_day) = (second / 86_400, second % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day / 60 % 60);
    put(17, 2, in_day % 60);
    text
}

/// Whether a string value reads unambiguously without quotes: visible ASCII, no quote or
/// backslash.
pub(super) fn prints_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::captured::CapturedLines;

    fn line_of(log: impl FnOnce()) -> String {
        let lines = CapturedLines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(TextLine)
                .with_ansi(false)
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        lines.take()
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
    fn durations_print_as_debug_prints_them() {
        for micros in [
            0u64,
            1,
            10,
            56,
            100,
            146,
            999,
            1000,
            1001,
            1010,
            12_500,
            56_184,
            999_999_999_999_999,
        ] {
            let value = micros as f64 / 1e3;
            assert_eq!(
                thousandths(value, &mut [0; THOUSANDTHS_LEN]),
                Some(&*format!("{value:?}"))
            );
        }
        for other in [
            -0.0,
            -1.0,
            0.0001,
            0.1234,
            1e12,
            1e300,
            f64::NAN,
            f64::INFINITY,
            0.056184000000000005,
        ] {
            assert_eq!(thousandths(other, &mut [0; THOUSANDTHS_LEN]), None, "{other:?}");
        }
        let line = line_of(|| tracing::info!(duration_ms = 2.0, ratio = 0.25, odd = 1e-7, "rpc"));
        assert!(
            line.ends_with(" rpc duration_ms=2.0 ratio=0.25 odd=1e-7\n"),
            "{line}"
        );
    }

    proptest::proptest! {
        #[test]
        fn every_whole_microsecond_prints_as_debug_does(micros in 0u64..1_000_000_000_000_000) {
            let value = micros as f64 / 1e3;
            let mut digits = [0; THOUSANDTHS_LEN];
            proptest::prop_assert_eq!(thousandths(value, &mut digits), Some(&*format!("{value:?}")));
        }

        #[test]
        fn any_other_value_prints_as_debug_does_or_is_left_to_it(value: f64) {
            let mut digits = [0; THOUSANDTHS_LEN];
            if let Some(text) = thousandths(value, &mut digits) {
                proptest::prop_assert_eq!(text, format!("{value:?}"));
            }
        }

        #[test]
        fn any_second_reads_as_a_date(second in 0u64..253_402_300_800) {
            let text = second_text(second);
            let text = std::str::from_utf8(&text).unwrap();
            let field = |range: std::ops::Range<usize>| text[range].parse::<u64>().unwrap();
            proptest::prop_assert!((1970..=9999).contains(&field(0..4)));
            proptest::prop_assert!((1..=12).contains(&field(5..7)) && (1..=31).contains(&field(8..10)));
            proptest::prop_assert_eq!(field(11..13) * 3600 + field(14..16) * 60 + field(17..19), second % 86_400);
        }
    }

    #[test]
    fn the_cached_timestamp_reads_as_tracing_subscribers() {
        // Known instants: the epoch, a leap day, the last second before a new year, 9999.
        for (second, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_798_761_599, "2026-12-31T23:59:59."),
            (1_764_642_683, "2025-12-02T02:31:23."),
            (253_402_300_799, "9999-12-31T23:59:59."),
        ] {
            assert_eq!(
                std::str::from_utf8(&second_text(second)).unwrap(),
                text,
                "{second}"
            );
        }
        // And the clock now, as tracing-subscriber's own timer prints it (retried if a second
        // boundary falls between the two).
        let format = |timer: &dyn Fn(&mut Writer<'_>) -> fmt::Result| {
            let mut text = String::new();
            timer(&mut Writer::new(&mut text)).unwrap();
            text
        };
        for _ in 0..3 {
            let cached = format(&|w| CachedTime.format_time(w));
            let theirs = format(&|w| SystemTime.format_time(w));
            assert_eq!(cached.len(), theirs.len(), "{cached} {theirs}");
            if cached[..20] == theirs[..20] {
                assert!(cached.ends_with('Z'));
                return;
            }
        }
        panic!("the cached timestamp's second differs from tracing-subscriber's");
    }

    #[test]
    fn ids_are_written_as_w3c_spells_them() {
        let trace_id = opentelemetry::trace::TraceId::from(0x0af7651916cd43dd8448eb211c80319cu128);
        let span_id = opentelemetry::trace::SpanId::from(0x00f067aa0ba902b7u64);
        let ids = SpanContext::new(trace_id, span_id, Default::default(), false, Default::default());
        assert_eq!(
            CallIds::of(&ids).text_prefix().concat(),
            format!("trace_id={trace_id} span_id={span_id} ")
        );
        assert_eq!(
            CallIds::of(&ids).json_keys().concat(),
            format!("\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",")
        );
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
