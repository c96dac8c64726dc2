//! How the runtime watches a connection's socket once it is open: the writer and the reader
//! task each register a descriptor of their own for the one readiness they wait for.
//!
//! A socket registered with the runtime's reactor for reading wakes a runtime thread whenever
//! bytes arrive, whether or not a task waits for them. While an event loop reads the answers
//! itself (`loop_read`), nothing in the runtime does: every answer still woke a runtime thread
//! that found nothing to do (a wake-up of a second thread per answer, paid by the server's send
//! and by the client's CPU). So the writer's descriptor is registered for writability only
//! (arriving bytes do not wake it), and the reader task's for readability only, and only while
//! the reader task reads: it takes its descriptor out of the reactor when a loop begins to read
//! and registers it again when the loop lets go ([`ReadSocket::park`]).
//!
//! The reader task's descriptor is the connection's second one (`Shared::watch`, which callers
//! and event loops read and peek): both descriptors are of one socket, so its blocking mode
//! (`ReadSide::make_blocking`) and its shutdown are shared. Elsewhere than on Unix the socket stays registered as tokio
//! registers it, for both, split in two halves.

use std::io;

#[cfg(not(unix))]
pub(super) use halves::{split, ReadSocket, WriteSocket};
#[cfg(unix)]
pub(super) use registered::{split, ReadSocket, WriteSocket};

/// What a read that may have emptied the socket returns: the bytes read, or `WouldBlock` when
/// the read left room in the buffer (it emptied the socket), which makes tokio forget the
/// readiness.
struct ReadReadiness;

impl ReadReadiness {
    fn of(read: usize, room: usize) -> io::Result<usize> {
        if read > 0 && read < room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    }
}

#[cfg(unix)]
mod registered {
    use std::io::{self, Read as _, Write as _};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
    use tokio::io::Interest;

    use super::ReadReadiness;

    /// Takes an open socket out of the reactor and registers it again as the writer's
    /// descriptor; `reading`, a second descriptor of it, is the reader task's.
    pub(in crate::connection) fn split(
        socket: tokio::net::TcpStream,
        reading: Arc<TcpStream>,
    ) -> io::Result<(ReadSocket, WriteSocket)> {
        // `into_std` deregisters the socket and keeps it non-blocking.
        let writing = register(socket.into_std()?, Interest::WRITABLE)?;
        Ok((
            ReadSocket {
                watched: None,
                parked: Some(reading),
            },
            WriteSocket(writing),
        ))
    }

    /// Registers `socket` with the current runtime's reactor for `interest`.
    #[allow(unsafe_code)]
    fn register<S: AsRawFd>(socket: S, interest: Interest) -> io::Result<AsyncFd<S>> {
        // SAFETY: `S` is a `TcpStream` or an `Arc` of one: its descriptor stays open, on the same
        // socket, and `as_raw_fd` returns it, while the `AsyncFd` holds it (a `TcpStream` closes
        // its descriptor only when dropped, and the `Arc` the `AsyncFd` holds keeps it alive).
        unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
    }

    /// The writer's descriptor, registered for writability only.
    pub(in crate::connection) struct WriteSocket(AsyncFd<TcpStream>);

    impl WriteSocket {
        /// Writes all of `bytes`: at once when the socket takes them (the usual case, with no wait
        /// for a readiness the reactor may not have reported yet), otherwise as it drains.
        pub(in crate::connection) async fn write_all(
            &mut self,
            mut bytes: &[u8],
        ) -> io::Result<()> {
            while !bytes.is_empty() {
                let written = match (&mut self.0.get_ref()).write(bytes) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        let mut ready = self.0.writable().await?;
                        // A readiness seen before the failed write is cleared here, not one that
                        // came after it.
                        match ready.try_io(|socket| (&mut socket.get_ref()).write(bytes)) {
                            Ok(written) => written,
                            Err(_would_block) => continue,
                        }
                    }
                    written => written,
                };
                match written {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => bytes = &bytes[n..],
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(())
        }
    }

    /// The reader task's descriptor: registered for readability while the reader task reads,
    /// parked out of the reactor while an event loop does.
    pub(in crate::connection) struct ReadSocket {
        watched: Option<AsyncFd<Arc<TcpStream>>>,
        parked: Option<Arc<TcpStream>>,
    }

    impl ReadSocket {
        /// Takes the descriptor out of the reactor (an event loop reads the socket now).
        pub(in crate::connection) fn park(&mut self) {
            if let Some(watched) = self.watched.take() {
                self.parked = Some(watched.into_inner());
            }
        }

        /// Waits until the socket is readable, registering the descriptor again if it was parked.
        pub(in crate::connection) async fn readable(&mut self) -> io::Result<ReadReady<'_>> {
            if let Some(socket) = self.parked.take() {
                self.watched = Some(register(socket, Interest::READABLE)?);
            }
            let watched = self
                .watched
                .as_ref()
                .ok_or_else(|| io::Error::other("the socket was not registered again"))?;
            Ok(ReadReady(watched.readable().await?))
        }
    }

    /// A readiness to read ([`ReadSocket::readable`]).
    pub(in crate::connection) struct ReadReady<'a>(AsyncFdReadyGuard<'a, Arc<TcpStream>>);

    impl ReadReady<'_> {
        /// Reads into `space`: `Ok(n)` when the read filled it (more may wait) or found the end of
        /// the stream (0); `Err(WouldBlock)` after a read that emptied the socket, with `read` set
        /// to what it read, and the readiness forgotten, so the next wait is for new bytes (a read
        /// that only found the socket empty would cost a system call per answer).
        pub(in crate::connection) fn read(
            &mut self,
            space: &mut [u8],
            read: &mut usize,
        ) -> io::Result<usize> {
            let room = space.len();
            let outcome = self.0.try_io(|socket| {
                *read = (&mut &**socket.get_ref()).read(space)?;
                ReadReadiness::of(*read, room)
            });
            outcome.unwrap_or_else(|_would_block| Err(io::ErrorKind::WouldBlock.into()))
        }
    }
}

#[cfg(not(unix))]
mod halves {
    use std::io;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    use super::ReadReadiness;

    pub(in crate::connection) fn split(
        socket: tokio::net::TcpStream,
        _reading: std::sync::Arc<std::net::TcpStream>,
    ) -> io::Result<(ReadSocket, WriteSocket)> {
        let (read, write) = socket.into_split();
        Ok((ReadSocket(read), WriteSocket(write)))
    }

    pub(in crate::connection) struct WriteSocket(OwnedWriteHalf);

    impl WriteSocket {
        pub(in crate::connection) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.0.write_all(bytes).await
        }
    }

    pub(in crate::connection) struct ReadSocket(OwnedReadHalf);

    impl ReadSocket {
        pub(in crate::connection) fn park(&mut self) {}

        pub(in crate::connection) async fn readable(&mut self) -> io::Result<ReadReady<'_>> {
            self.0.readable().await?;
            Ok(ReadReady(&self.0))
        }
    }

    pub(in crate::connection) struct ReadReady<'a>(&'a OwnedReadHalf);

    impl ReadReady<'_> {
        pub(in crate::connection) fn read(
            &mut self,
            space: &mut [u8],
            read: &mut usize,
        ) -> io::Result<usize> {
            let half = self.0;
            let room = space.len();
            half.as_ref().try_io(tokio::io::Interest::READABLE, || {
                *read = std::io::Read::read(&mut &*socket2::SockRef::from(half.as_ref()), space)?;
                ReadReadiness::of(*read, room)
            })
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::HashSet;
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;
    use std::task::Poll;

    use super::super::caller_wait::tests::{not_found_answer, plaintext_pair, runtime};
    use super::super::loop_read::tests::{call, parked, poll};
    use super::super::Connection;

    const EPOLLIN: u32 = 0x001;
    const EPOLLOUT: u32 = 0x004;

    /// The readiness each epoll registration of `connection`'s socket (any descriptor of it)
    /// waits for, read from `/proc/self/fdinfo`: an epoll instance may have several descriptors
    /// (the runtime duplicates its own), each listing its registrations, so each instance is
    /// read once.
    fn registrations(connection: &Connection) -> Vec<u32> {
        let socket = socket_inode(connection);
        let mut instances = HashSet::new();
        let mut masks = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
            let Ok(info) = std::fs::read_to_string(entry.expect("entry").path()) else {
                continue;
            };
            // `ino:` on a line of its own names the epoll instance itself.
            let instance = info.lines().find(|line| line.starts_with("ino:"));
            if !info.contains("tfd:") || !instances.insert(instance.map(str::to_owned)) {
                continue;
            }
            for line in info.lines() {
                // `tfd:        9 events:       19 data: ...`
                let mut words = line.split_whitespace();
                let (Some("tfd:"), Some(fd), Some("events:"), Some(events)) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    continue;
                };
                if std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .ok()
                    .as_ref()
                    == Some(&socket)
                {
                    masks.push(u32::from_str_radix(events, 16).expect("hex mask"));
                }
            }
        }
        masks
    }

    /// What a descriptor of `connection`'s socket links to in `/proc/self/fd` (`socket:[inode]`).
    fn socket_inode(connection: &Connection) -> PathBuf {
        let watch = format!("/proc/self/fd/{}", connection.shared.watch.as_raw_fd());
        std::fs::read_link(watch).expect("the socket's inode")
    }

    /// How many of this process's descriptors are of `connection`'s socket.
    fn descriptors(connection: &Connection) -> usize {
        let socket = socket_inode(connection);
        std::fs::read_dir("/proc/self/fd")
            .expect("fd")
            .filter(|entry| {
                let path = entry.as_ref().expect("entry").path();
                std::fs::read_link(path).ok().as_ref() == Some(&socket)
            })
            .count()
    }

    fn waiting_for(connection: &Connection, readiness: u32) -> usize {
        let masks = registrations(connection);
        masks.iter().filter(|mask| *mask & readiness != 0).count()
    }

    #[test]
    fn while_an_event_loop_reads_the_answers_no_registration_waits_for_them() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (connection, mut server) = plaintext_pair();
        runtime.block_on(tokio::task::yield_now());
        assert_eq!(
            waiting_for(&connection, EPOLLIN),
            1,
            "the reader task reads"
        );
        assert_eq!(waiting_for(&connection, EPOLLOUT), 1, "the writer's");
        assert_eq!(
            descriptors(&connection),
            2,
            "the writer's, and the watch the reader shares"
        );
        let (mut pending, socket) = parked(&connection, 1);
        let reading = socket.reading();
        for id in 1..=3 {
            if id > 1 {
                pending = call(&connection, id);
            }
            let _ = poll(&mut pending);
            server.write_all(&not_found_answer(id)).expect("answer");
            // The first answer wakes the reader task once, which then leaves the socket.
            for _ in 0..20 {
                runtime.block_on(tokio::task::yield_now());
            }
            assert_eq!(
                waiting_for(&connection, EPOLLIN),
                0,
                "answer {id}: a registration waits for the answers the loop reads"
            );
            assert!(socket.read_answers(), "the connection lives on");
            let (Poll::Ready(answer), _) = poll(&mut pending) else {
                panic!("answer {id} was not read by the loop");
            };
            assert_eq!(answer.expect("answer").get().expect("decode").get_id(), id);
        }
        assert_eq!(waiting_for(&connection, EPOLLOUT), 1);
        // The loop lets go: the reader task registers again and reads.
        drop(reading);
        server.write_all(&not_found_answer(4)).expect("answer");
        let answer = runtime
            .block_on(call(&connection, 4))
            .expect("the reader task delivered the answer");
        assert_eq!(answer.get().expect("decode").get_id(), 4);
        assert_eq!(waiting_for(&connection, EPOLLIN), 1);
    }
}
