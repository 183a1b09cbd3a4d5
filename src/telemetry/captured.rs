//! For tests: a writer that keeps what the log output writes.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Lines written, shared by its clones: a writer for the formatting layer ([`MakeWriter`])
/// and for the log writer's thread (`io::Write`).
#[derive(Clone, Default)]
pub(super) struct CapturedLines(Arc<Mutex<Vec<u8>>>);

impl CapturedLines {
    /// What was written since the last call.
    pub(super) fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl std::io::Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLines {
    type Writer = CapturedLines;

    fn make_writer(&'a self) -> CapturedLines {
        self.clone()
    }
}
