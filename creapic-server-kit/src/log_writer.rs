//! A log writer for busy servers: request threads append their lines to one shared buffer, and
//! one thread writes the buffer out in batches.
//!
//! Design decision: **a line costs a copy, not a system call or a wake-up.** An access line per
//! request written straight to stderr is a `write` on the request's thread; a queue of lines to
//! a writer thread (`tracing-appender`) is an allocation, a channel send and, whenever the
//! writer is asleep, a futex wake — measured on two cores, neither was cheaper than the other
//! (docs/benchmarks.md). Here a line is appended under a mutex held for a `memcpy`; the writer
//! thread sleeps while the buffer is empty, wakes with its first line, then gathers until
//! [`FLUSH_BYTES`] are there or [`FLUSH_EVERY`] has passed, swaps the buffer for an empty one and
//! writes it in one call. A line therefore reaches the sink at most
//! [`FLUSH_EVERY`] after it was logged, and under load thousands of lines share a write.
//!
//! Bounded, never lossy: past [`BUFFER_MAX`] bytes waiting, logging waits for the writer. The
//! [`LogFlush`] guard writes whatever is left when dropped (hold it until the server stopped); a
//! process killed outright loses at most the last [`FLUSH_EVERY`] of lines.
//!
//! `Arc<LogWriter>` is a `tracing_subscriber::fmt::MakeWriter` (for any `W` with `&W: Write`),
//! so a host passes it to `.with_writer(…)` as it is.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The writer thread writes once this much has gathered.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// … or once this long has passed since it last wrote, whichever comes first.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Most bytes waiting; past that, logging waits for the writer.
pub const BUFFER_MAX: usize = 8 * 1024 * 1024;

/// The shared buffer; see the module documentation.
#[derive(Debug)]
pub struct LogWriter {
    state: Mutex<State>,
    /// The writer thread waits here for bytes (or for the end).
    gathered: Condvar,
    /// Loggers wait here when the buffer is full.
    room: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

/// Writes what is still buffered and stops the writer thread when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops the log writer: hold it until the server stopped"]
pub struct LogFlush {
    writer: Arc<LogWriter>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// A writer to the process's stderr, and its guard.
    pub fn stderr() -> io::Result<(Arc<LogWriter>, LogFlush)> {
        LogWriter::spawn(io::stderr())
    }

    /// A writer to `sink`, written from a thread named `creapic-log`, and its guard.
    pub fn spawn<S: Write + Send + 'static>(sink: S) -> io::Result<(Arc<LogWriter>, LogFlush)> {
        let writer = Arc::new(LogWriter {
            state: Mutex::new(State::default()),
            gathered: Condvar::new(),
            room: Condvar::new(),
        });
        let shared = Arc::clone(&writer);
        let thread = std::thread::Builder::new()
            .name("creapic-log".into())
            .spawn(move || shared.run(sink))?;
        let guard = LogFlush {
            writer: Arc::clone(&writer),
            thread: Some(thread),
        };
        Ok((writer, guard))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: waits for bytes, swaps the buffer out, writes it; until closed and
    /// empty. A sink that fails drops that batch (there is nowhere to report it) and goes on.
    fn run<S: Write>(&self, mut sink: S) {
        let mut out = Vec::with_capacity(FLUSH_BYTES);
        loop {
            {
                let mut state = self.lock();
                // Asleep while there is nothing to write (no timer ticks at rest) …
                while state.buf.is_empty() && !state.closed {
                    state = self
                        .gathered
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // … then gathering for a while, unless enough has gathered already.
                if state.buf.len() < FLUSH_BYTES && !state.closed {
                    state = self
                        .gathered
                        .wait_timeout(state, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if state.buf.is_empty() && state.closed {
                    break;
                }
                std::mem::swap(&mut state.buf, &mut out);
            }
            self.room.notify_all();
            let _ = sink.write_all(&out).and_then(|()| sink.flush());
            out.clear();
            // A burst's buffer is not kept for ever.
            out.shrink_to(FLUSH_BYTES);
        }
        let _ = sink.flush();
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.lock();
        while !state.closed && !state.buf.is_empty() && state.buf.len() + line.len() > BUFFER_MAX {
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        // The writer sleeps on an empty buffer, and gathers until enough is there.
        if was_empty || state.buf.len() >= FLUSH_BYTES {
            self.gathered.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.writer.lock().closed = true;
        self.writer.gathered.notify_one();
        self.writer.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, counting the writes it was given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(b);
            s.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines from many threads all arrive, whole and in each thread's order, in far fewer
    /// writes than lines; a lone line arrives within the flush period.
    #[test]
    fn lines_arrive_whole_batched_and_promptly() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(sink.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = Arc::clone(&writer);
                s.spawn(move || {
                    for i in 0..5_000 {
                        let line = format!("thread {t} line {i:05} {}\n", "x".repeat(60));
                        (&*writer).write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "every line, none lost");
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 5_000);
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order");
        }
        assert!(writes < 2_000, "{writes} writes for 20,000 lines");

        let sink = Sink::default();
        let (writer, _guard) = LogWriter::spawn(sink.clone()).unwrap();
        (&*writer).write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lone line never came"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"alone\n");
    }
}
