//! Awaited calls: a Rust future handed to asyncio as an `asyncio.Future`, for one wake-up of
//! the event loop per call and no other thread hop.
//!
//! [`spawn`] polls the future first on the calling thread, the event loop's, so the request
//! goes out from there and no runtime worker is woken to send it. When the future waits (for
//! its answer, mostly), its waker is its [`Call`]: woken on whichever thread delivers the
//! answer (the runtime worker reading the connection), the call puts itself on its loop's
//! [`LoopQueue`] and, when the queue was empty, writes one byte to a socket the loop watches
//! (`loop.add_reader`). The loop then runs [`QueueReader`] on its own thread, which polls each
//! queued call again and resolves its `asyncio.Future`. So no thread but the loop's takes the
//! GIL (a worker never waits for a GIL the loop holds), the loop wakes once per batch of
//! answers, and the runtime only reads sockets. A loop that cannot watch a socket
//! (`add_reader` unsupported, as on Windows' proactor loop) is rung with
//! `call_soon_threadsafe` from a blocking-pool thread instead, which costs a hop.
//!
//! Better still, a call that waits for its answer hands over its connection's socket
//! ([`eventdbx_client::offered_socket`]): the loop watches it too (`loop.add_reader`, from the
//! first call that waits on the connection until the connection ends; one connection per
//! loop, see [`LoopQueue::read`]), and when the answer arrives the loop reads it itself
//! ([`AnswerReader`]) and polls the calls it completed at once. Meanwhile the connection's
//! reader task leaves the socket to the loop. So an answer costs the loop one wake-up and
//! waits for no other thread.
//!
//! Cancelling the `asyncio.Future` (a cancelled task, `asyncio.wait_for`) drops the Rust
//! future at once, which abandons the request: the connection drops its late answer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{intern, IntoPyObjectExt};

use eventdbx_client::{offered_socket, AnswerSocket, LoopReading};

use crate::error::exception;
use crate::runtime::runtime;

/// How an awaited call ends: its result made a Python value (or exception) on the loop's
/// thread, with the GIL.
pub(crate) type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

type CallFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The end of an awaited call: its value for Python, or its error as the exception.
pub(crate) fn outcome<T>(result: eventdbx_client::Result<T>) -> Outcome
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    Box::new(move |py: Python<'_>| match result {
        Ok(value) => value.into_py_any(py),
        Err(err) => Err(exception(py, &err)),
    })
}

/// A poisoned lock only means a panic while it was held; what it guards stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `future` for the running event loop: returns the `asyncio.Future` it resolves.
pub(crate) fn spawn<'py, F>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?;
    let queue = queue_of(py, &event_loop)?;
    let awaited = event_loop.call_method0(intern!(py, "create_future"))?;
    let call = Arc::new(Call {
        future: Mutex::new(Some(Box::pin(future))),
        awaited: awaited.clone().unbind(),
        on_done: Mutex::new(None),
        queue,
    });
    let on_done = Py::new(
        py,
        CancelCall {
            call: Arc::downgrade(&call),
        },
    )?
    .into_any();
    awaited.call_method1(intern!(py, "add_done_callback"), (on_done.clone_ref(py),))?;
    *lock(&call.on_done) = Some(on_done);
    call.advance(py)?;
    Ok(awaited)
}

/// One awaited call: the Rust future until it completes, and the `asyncio.Future` it resolves.
struct Call {
    future: Mutex<Option<CallFuture>>,
    awaited: Py<PyAny>,
    /// The done callback that drops the future when `awaited` is cancelled; removed before
    /// the result is set, so that a completed call schedules nothing more on the loop.
    on_done: Mutex<Option<Py<PyAny>>>,
    queue: Arc<LoopQueue>,
}

impl Wake for Call {
    fn wake(self: Arc<Self>) {
        let queue = Arc::clone(&self.queue);
        queue.push(self);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.push(Arc::clone(self));
    }
}

impl Call {
    /// Polls the future (on the loop's thread, in the runtime's context); once it is done,
    /// resolves the `asyncio.Future`. An error is one of setting the result.
    fn advance(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let runtime = runtime(py)?;
        let mut slot = lock(&self.future);
        // Done already, or cancelled.
        let Some(future) = slot.as_mut() else {
            return Ok(());
        };
        let waker = Waker::from(Arc::clone(self));
        let (polled, offered) = {
            let _entered = runtime.enter();
            offered_socket(|| future.as_mut().poll(&mut Context::from_waker(&waker)))
        };
        let Poll::Ready(outcome) = polled else {
            drop(slot);
            if let Some(socket) = offered {
                self.queue.watch(py, self.awaited.bind(py), &socket);
            }
            return Ok(());
        };
        *slot = None;
        drop(slot);
        self.resolve(py, outcome(py))
    }

    fn resolve(&self, py: Python<'_>, result: PyResult<Py<PyAny>>) -> PyResult<()> {
        let awaited = self.awaited.bind(py);
        if let Some(on_done) = lock(&self.on_done).take() {
            awaited.call_method1(intern!(py, "remove_done_callback"), (on_done,))?;
        }
        // Cancelled meanwhile: nobody waits for the result.
        if awaited.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match result {
            Ok(value) => awaited.call_method1(intern!(py, "set_result"), (value,))?,
            Err(err) => {
                awaited.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?
            }
        };
        Ok(())
    }
}

/// The done callback of a call's `asyncio.Future`: when it was cancelled, drops the call's
/// future (abandoning the request) without waiting for its answer or its timeout; a v1
/// connection, which runs one request at a time, is free for the next one at once.
#[pyclass(frozen)]
struct CancelCall {
    /// Weak: the `asyncio.Future` holds this callback, and the call holds the future.
    call: Weak<Call>,
}

#[pymethods]
impl CancelCall {
    fn __call__(&self, py: Python<'_>, awaited: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(call) = self.call.upgrade() else {
            return Ok(());
        };
        if !awaited
            .call_method0(intern!(py, "cancelled"))?
            .is_truthy()?
        {
            return Ok(());
        }
        let future = lock(&call.future).take();
        let _entered = runtime(py)?.enter();
        drop(future);
        Ok(())
    }
}

/// The calls of one event loop that were woken and wait to be polled on its thread, and how
/// the loop is told there are some.
struct LoopQueue {
    woken: Mutex<Woken>,
    alarm: Alarm,
    /// The connection whose socket the loop watches and reads itself, from the first call
    /// that waits on it until it ends or is let go. One per loop: the answers of any other
    /// are read by the runtime's worker, in parallel with the loop. Reading an answer on the
    /// loop's thread saves the wake-up of a second thread, which is what a loop waiting for
    /// one answer at a time pays for each; a loop busy with many answers gains nothing from
    /// it and would do on its own thread the reads and decryption the worker does beside it
    /// (`docs/benchmarks.md`: one connection 15-25% more appends/s; 4 and 16 no gain and 64
    /// 7% fewer when the loop read every connection, no better with up to eight). Likewise a
    /// connection with more than a few calls in flight together is let go for good
    /// ([`eventdbx_client::FEW_IN_FLIGHT`]).
    read: Mutex<Option<AnswerSocket>>,
    /// Cleared once the loop refused to watch a socket (`add_reader` unsupported).
    can_watch: AtomicBool,
}

thread_local! {
    /// The queue whose loop is reading answers on this thread right now ([`AnswerReader`]):
    /// a call it wakes is queued without ringing the loop, which polls it next anyway.
    static READING: Cell<usize> = const { Cell::new(0) };
}

#[derive(Default)]
struct Woken {
    calls: Vec<Arc<Call>>,
    /// Whether the loop was told since it last took the calls: one wake-up per batch.
    rung: bool,
}

enum Alarm {
    /// A socket pair: a byte written to `ring` makes `heard`, which the loop watches,
    /// readable.
    #[cfg(unix)]
    Socket {
        ring: std::os::unix::net::UnixStream,
        heard: std::os::unix::net::UnixStream,
    },
    /// The loop's `call_soon_threadsafe`, called from a blocking-pool thread (it takes the
    /// GIL, which the waking thread may not wait for).
    Threadsafe {
        event_loop: Py<PyAny>,
        runtime: tokio::runtime::Handle,
    },
}

impl LoopQueue {
    /// A queue for `event_loop`, watched through a socket when the loop can watch one.
    fn watched_by(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopQueue>> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;

            let (ring, heard) = std::os::unix::net::UnixStream::pair()?;
            ring.set_nonblocking(true)?;
            heard.set_nonblocking(true)?;
            let fd = heard.as_raw_fd();
            let queue = Arc::new(LoopQueue {
                woken: Mutex::default(),
                alarm: Alarm::Socket { ring, heard },
                read: Mutex::default(),
                can_watch: true.into(),
            });
            let reader = Py::new(
                py,
                QueueReader {
                    queue: Arc::clone(&queue),
                },
            )?;
            match event_loop.call_method1(intern!(py, "add_reader"), (fd, reader)) {
                Ok(_) => return Ok(queue),
                Err(err) if err.is_instance_of::<PyNotImplementedError>(py) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Arc::new(LoopQueue {
            woken: Mutex::default(),
            alarm: Alarm::Threadsafe {
                event_loop: event_loop.clone().unbind(),
                runtime: runtime(py)?.handle().clone(),
            },
            read: Mutex::default(),
            can_watch: false.into(),
        }))
    }

    /// A call waits on `socket`: the loop watches it unless it does already, and reads what
    /// arrives on it until its connection ends. Not when the loop cannot watch sockets, or
    /// reads another connection already ([`LoopQueue::read`]), or when more than a few calls
    /// wait on that connection together ([`eventdbx_client::FEW_IN_FLIGHT`]): the loop then lets
    /// go of it for good (the runtime's reader task delivers its answers, as it does where the
    /// loop does not read). The call's request is
    /// out already: a loop that refuses to watch (`add_reader` unsupported, or failing) only
    /// leaves its answers to the reader task, for this call and the loop's later ones.
    fn watch(self: &Arc<Self>, py: Python<'_>, awaited: &Bound<'_, PyAny>, socket: &AnswerSocket) {
        if self.try_watch(py, awaited, socket).is_err() {
            self.can_watch.store(false, Ordering::Relaxed);
        }
    }

    fn try_watch(
        self: &Arc<Self>,
        py: Python<'_>,
        awaited: &Bound<'_, PyAny>,
        socket: &AnswerSocket,
    ) -> PyResult<()> {
        if !self.can_watch.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !socket.few_in_flight() {
            socket.decline();
            self.let_go(py, &awaited.call_method0(intern!(py, "get_loop"))?, socket);
            return Ok(());
        }
        if lock(&self.read).is_some() {
            return Ok(());
        }
        let event_loop = awaited.call_method0(intern!(py, "get_loop"))?;
        let reader = AnswerReader {
            socket: socket.clone(),
            queue: Arc::clone(self),
            event_loop: event_loop.clone().unbind(),
            _reading: socket.reading(),
        };
        event_loop.call_method1(intern!(py, "add_reader"), (socket.fd(), reader))?;
        *lock(&self.read) = Some(socket.clone());
        Ok(())
    }

    /// The loop stops watching `socket`, if it does (when its connection ended, this lets its
    /// descriptor close). A loop that fails to (closed meanwhile) runs its reader no more
    /// anyway.
    fn let_go(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, socket: &AnswerSocket) {
        let read = {
            let mut read = lock(&self.read);
            read.take_if(|known| known.same_as(socket))
        };
        if read.is_some() {
            let _ = event_loop.call_method1(intern!(py, "remove_reader"), (socket.fd(),));
        }
    }

    /// Queues a woken call; tells the loop unless it was told already, or is reading answers
    /// on this thread (then it polls the call right after).
    fn push(self: &Arc<Self>, call: Arc<Call>) {
        if READING.get() == Arc::as_ptr(self) as usize {
            lock(&self.woken).calls.push(call);
            return;
        }
        let ring = {
            let mut woken = lock(&self.woken);
            woken.calls.push(call);
            !std::mem::replace(&mut woken.rung, true)
        };
        if !ring {
            return;
        }
        match &self.alarm {
            #[cfg(unix)]
            Alarm::Socket { ring, .. } => {
                // Only fails once the loop closed the other end: then nobody listens.
                let _ = std::io::Write::write(&mut &*ring, &[1]);
            }
            Alarm::Threadsafe { runtime, .. } => {
                let queue = Arc::clone(self);
                runtime.spawn_blocking(move || {
                    Python::attach(|py| {
                        let Alarm::Threadsafe { event_loop, .. } = &queue.alarm else {
                            return;
                        };
                        let reader = QueueReader {
                            queue: Arc::clone(&queue),
                        };
                        // Fails only once the loop is closed: then nobody listens.
                        let _ = reader.into_bound_py_any(py).and_then(|reader| {
                            event_loop.call_method1(
                                py,
                                intern!(py, "call_soon_threadsafe"),
                                (reader,),
                            )
                        });
                    });
                });
            }
        }
    }

    /// Takes the woken calls (and hears the bell that announced them).
    fn take(&self) -> Vec<Arc<Call>> {
        #[cfg(unix)]
        if let Alarm::Socket { heard, .. } = &self.alarm {
            // One byte per batch, so one read empties the socket.
            let mut bytes = [0u8; 64];
            while let Ok(read) = std::io::Read::read(&mut &*heard, &mut bytes) {
                if read < bytes.len() {
                    break;
                }
            }
        }
        let mut woken = lock(&self.woken);
        woken.rung = false;
        std::mem::take(&mut woken.calls)
    }
}

/// What the event loop runs when a socket its calls wait on is readable: reads the answers
/// there and polls the calls they woke, on the loop's thread.
#[pyclass(frozen)]
struct AnswerReader {
    socket: AnswerSocket,
    queue: Arc<LoopQueue>,
    event_loop: Py<PyAny>,
    /// Keeps the connection's reader task off the socket while the loop reads it (dropped
    /// with the reader: when the loop stops watching, or closes).
    _reading: LoopReading,
}

#[pymethods]
impl AnswerReader {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let runtime = runtime(py)?;
        let previous = READING.replace(Arc::as_ptr(&self.queue) as usize);
        let alive = {
            let _entered = runtime.enter();
            self.socket.read_answers()
        };
        READING.set(previous);
        if !alive {
            self.queue
                .let_go(py, self.event_loop.bind(py), &self.socket);
        }
        // The calls woken here (the alarm was not rung for them), and any others waiting.
        let calls = std::mem::take(&mut lock(&self.queue.woken).calls);
        advance_all(py, calls)
    }
}

/// Polls each call; one failing to set its result must not strand the others.
fn advance_all(py: Python<'_>, calls: Vec<Arc<Call>>) -> PyResult<()> {
    let mut failed = None;
    for call in calls {
        if let Err(err) = call.advance(py) {
            failed.get_or_insert(err);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// What the event loop runs when calls were woken: polls each on the loop's thread.
#[pyclass(frozen)]
struct QueueReader {
    queue: Arc<LoopQueue>,
}

#[pymethods]
impl QueueReader {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        advance_all(py, self.queue.take())
    }
}

thread_local! {
    /// The queue of the event loop that last ran on this thread (a loop runs on one thread).
    static CURRENT: RefCell<Option<(Py<PyAny>, Arc<LoopQueue>)>> = const { RefCell::new(None) };
}

/// The queue of `event_loop`, created (and watched) on its first call. Another loop on this
/// thread replaces it; the loop that watched the old queue holds it until closed.
fn queue_of(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopQueue>> {
    let known = CURRENT.with_borrow(|current| match current {
        Some((known, queue)) if event_loop.is(known) => Some(Arc::clone(queue)),
        _ => None,
    });
    if let Some(queue) = known {
        return Ok(queue);
    }
    let queue = LoopQueue::watched_by(py, event_loop)?;
    let previous = CURRENT.replace(Some((event_loop.clone().unbind(), Arc::clone(&queue))));
    drop(previous);
    Ok(queue)
}
