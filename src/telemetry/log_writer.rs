//! Where log lines go: a buffer that a thread of its own writes out in batches, so that a
//! call never waits on the terminal, a pipe or a file.
//!
//! Written here rather than taken from `tracing-appender` (its `NonBlocking`, used before):
//! that writer's thread wakes for every line and writes whenever its queue is empty, so at a
//! steady moderate rate, one call at a time, every access line cost the process a wake-up, a
//! `write(2)` and crossbeam's spinning `sched_yield`s: 11.8 µs of CPU per call on the writer
//! thread (with h2load, 1 stream; the call itself took 42 µs). Here a line is appended to a
//! shared buffer under a lock; the thread is woken once per batch (when the buffer was empty,
//! or holds [`BATCH_BYTES`]) and writes everything that gathered in the next
//! [`FLUSH_INTERVAL`] with one `write(2)`. A line reaches stdout within that interval.
//!
//! Nothing is dropped: a buffer that holds [`LIMIT_BYTES`] makes the calls that log wait for
//! the writer (as `NonBlocking` did with `lossy(false)`), and the guard writes what is left
//! when it is dropped, waiting for that at most [`SHUTDOWN_WAIT`]; only a stdout that does not
//! drain by then loses lines (those still buffered, and any logged after).

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a batch waits for others before the batch is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A batch this large is written at once, without waiting for the interval.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The most the buffer holds; a line that would go past it waits for the writer.
pub const LIMIT_BYTES: usize = 1024 * 1024;
/// How long dropping the guard waits for the last batch to be written: a stdout that does not
/// drain (a full pipe nobody reads) must not hold the process's shutdown past its grace period.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Where the formatting layer and the access log write each line ([`MakeWriter`]); cheap to
/// clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes the lines still buffered and stops the thread when dropped.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The buffer and the two signals between the calls and the writer thread; what
/// [`LogWriter::make_writer`] lends a writer for one line.
pub struct Shared {
    buffer: Mutex<Buffer>,
    /// Tells the thread there is something to write.
    filled: Condvar,
    /// Tells waiting callers the buffer has been taken.
    drained: Condvar,
    limit: usize,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<u8>,
    /// Calls waiting for room: the batch is written without waiting out the interval.
    waiting: usize,
    stage: Stage,
}

/// Where the writer is in its life; only the guard's drop moves it on from `Open`.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Lines are buffered and written in batches.
    #[default]
    Open,
    /// The guard is gone: the thread writes what is buffered, then stops. A line logged
    /// meanwhile waits, so that it comes after the last batch.
    Closing,
    /// The last batch is out: lines are written straight to stdout.
    Finished,
    /// The guard gave up waiting for a stdout that does not drain: lines are dropped.
    Abandoned,
}

impl LogWriter {
    /// Starts the thread that writes to `sink` (stdout, in the services).
    pub fn spawn(sink: impl Write + Send + 'static) -> io::Result<(LogWriter, LogWriterGuard)> {
        Self::with_limit(sink, LIMIT_BYTES)
    }

    fn with_limit(
        sink: impl Write + Send + 'static,
        limit: usize,
    ) -> io::Result<(LogWriter, LogWriterGuard)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::default(),
            filled: Condvar::new(),
            drained: Condvar::new(),
            limit,
        });
        let thread = std::thread::Builder::new()
            .name("meshwork-log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || shared.write_batches(sink)
            })?;
        let guard = LogWriterGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        Ok((LogWriter { shared }, guard))
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a Shared;

    fn make_writer(&'a self) -> Self::Writer {
        &self.shared
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A thread that panicked while holding the lock left whole lines behind (each is
        // appended in one call), so the buffer is still good to write.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: one batch after another, until the guard closes the buffer.
    fn write_batches(&self, mut sink: impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut buffer = self.lock();
            while buffer.lines.is_empty() && buffer.stage == Stage::Open {
                buffer = self.filled.wait(buffer).unwrap_or_else(PoisonError::into_inner);
            }
            // Let the first line gather company, unless the batch is already large or
            // calls are waiting for room.
            if buffer.lines.len() < BATCH_BYTES && buffer.waiting == 0 && buffer.stage == Stage::Open {
                buffer = self
                    .filled
                    .wait_timeout(buffer, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut buffer.lines, &mut batch);
            let closed = buffer.stage != Stage::Open;
            drop(buffer);
            self.drained.notify_all();
            // A failing stdout (a closed pipe) cannot be reported anywhere: the lines are lost.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            if closed {
                let mut buffer = self.lock();
                if buffer.stage == Stage::Closing {
                    buffer.stage = Stage::Finished;
                }
                drop(buffer);
                self.drained.notify_all();
                return;
            }
        }
    }
}

impl Write for &Shared {
    /// Appends `line` (each writer, the formatting layer and the access log, writes one whole
    /// line per call).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut buffer = self.lock();
        while buffer.stage == Stage::Open
            && !buffer.lines.is_empty()
            && buffer.lines.len() + line.len() > self.limit
        {
            buffer.waiting += 1;
            self.filled.notify_one();
            buffer = self.drained.wait(buffer).unwrap_or_else(PoisonError::into_inner);
            buffer.waiting -= 1;
        }
        while buffer.stage == Stage::Closing {
            buffer = self.drained.wait(buffer).unwrap_or_else(PoisonError::into_inner);
        }
        match buffer.stage {
            Stage::Open | Stage::Closing => {}
            Stage::Abandoned => return Ok(line.len()),
            Stage::Finished => {
                drop(buffer);
                return io::stdout().lock().write_all(line).map(|()| line.len());
            }
        }
        let before = buffer.lines.len();
        buffer.lines.extend_from_slice(line);
        drop(buffer);
        // Once per batch: when it starts (the thread is asleep with nothing to write) and
        // when it grows past BATCH_BYTES (the thread is waiting out the interval).
        if before == 0 || (before < BATCH_BYTES && before + line.len() >= BATCH_BYTES) {
            self.filled.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriterGuard {
    /// Has the thread write what is buffered, waiting at most [`SHUTDOWN_WAIT`] for it.
    fn drop(&mut self) {
        let mut buffer = self.shared.lock();
        buffer.stage = Stage::Closing;
        self.shared.filled.notify_one();
        self.shared.drained.notify_all();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while buffer.stage == Stage::Closing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Stuck writing: leave the thread to the process's exit, and let no call
                // that logs from here on wait for it.
                buffer.stage = Stage::Abandoned;
                self.shared.drained.notify_all();
                return;
            }
            buffer = self
                .shared
                .drained
                .wait_timeout(buffer, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(buffer);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer thread writes to it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn write_line(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_line_reaches_the_sink_without_more_lines_behind_it() {
        let sink = Sink::default();
        let (writer, _guard) = LogWriter::spawn(sink.clone()).unwrap();
        write_line(&writer, "one\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(sink.text(), "one\n");
    }

    #[test]
    fn every_line_is_written_in_order_even_past_the_limit() {
        let sink = Sink::default();
        // A limit of a few lines: most writes wait for the thread to take the buffer.
        let (writer, guard) = LogWriter::with_limit(sink.clone(), 64).unwrap();
        let lines: Vec<String> = (0..2_000).map(|i| format!("line {i}\n")).collect();
        std::thread::scope(|scope| {
            scope.spawn(|| lines.iter().for_each(|line| write_line(&writer, line)));
        });
        drop(guard);
        assert_eq!(sink.text(), lines.concat());
    }

    #[test]
    fn the_guard_writes_what_is_left() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(sink.clone()).unwrap();
        write_line(&writer, "a\n");
        write_line(&writer, "b\n");
        drop(guard);
        assert_eq!(sink.text(), "a\nb\n");
    }

    /// A sink whose writes never return, as a full pipe that nobody reads.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_does_not_hold_the_guard() {
        let (writer, guard) = LogWriter::spawn(Stuck).unwrap();
        write_line(&writer, "never written\n");
        let started = Instant::now();
        drop(guard);
        // Bounded by SHUTDOWN_WAIT, not by the sink; the generous margin is for a loaded machine.
        assert!(started.elapsed() < SHUTDOWN_WAIT * 10);
        // And a line logged after it does not wait for the stuck thread either (it is dropped).
        write_line(&writer, "after the guard\n");
    }
}
