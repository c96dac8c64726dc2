//! Which driver and pool failures become `unavailable` (nothing was done) and which stay
//! `storage` (an unknown outcome, or a failure a retry cannot cure): [`crate::db`],
//! [`crate::commit_error`], [`crate::pool_error`].
//!
//! The errors are the driver's own, from real sessions over loopback TCP with a backend that
//! speaks just enough of the PostgreSQL protocol to accept a connection and then fail the way a
//! stopped or failing database does (close the socket, send a FATAL `57P01`, an ERROR). The real
//! outage, PostgreSQL stopped under load, is `pg_outage` in the `eventdbx-cli` tests.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use eventdbx_store::StoreError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

use crate::{commit_error, db, pool_error};

/// What the backend does with the session's first query (or, for `RefuseLogin`, the login).
#[derive(Clone, Copy)]
enum Fate {
    /// Close the socket: a database stopped or a network cut.
    Close,
    /// `FATAL 57P01` then close: `pg_ctl stop -m fast` terminating the session.
    Terminate,
    /// `ERROR 23505`, and the session goes on: a unique key taken.
    UniqueViolation,
    /// `FATAL 28P01` at login: a wrong password.
    RefuseLogin,
    /// Never answer the query (the session stays open).
    Hold,
}

/// A backend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An `ErrorResponse` with a severity, an SQLSTATE and a message.
fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', severity), (b'C', code), (b'M', text)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// Reads one length-prefixed frontend message; `typed` when it has a type byte (all but the
/// startup message). `None` at EOF.
async fn read_message(socket: &mut TcpStream, typed: bool) -> Option<()> {
    if typed {
        socket.read_u8().await.ok()?;
    }
    let len = socket.read_u32().await.ok()?;
    let mut body = vec![0; (len as usize).saturating_sub(4)];
    socket.read_exact(&mut body).await.ok()?;
    Some(())
}

/// Serves every connection to the returned port with `fate`.
async fn backend(fate: Fate) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_message(&mut socket, false).await?;
                if let Fate::RefuseLogin = fate {
                    let refusal =
                        error_response("FATAL", "28P01", "password authentication failed");
                    socket.write_all(&refusal).await.ok()?;
                    return Some(());
                }
                let mut hello = message(b'R', &0u32.to_be_bytes());
                hello.extend(message(b'Z', b"I"));
                socket.write_all(&hello).await.ok()?;
                loop {
                    read_message(&mut socket, true).await?;
                    match fate {
                        Fate::Close | Fate::RefuseLogin => return Some(()),
                        Fate::Terminate => {
                            let bye = error_response("FATAL", "57P01", "terminating connection");
                            socket.write_all(&bye).await.ok()?;
                            return Some(());
                        }
                        Fate::UniqueViolation => {
                            let mut taken = error_response("ERROR", "23505", "duplicate key");
                            taken.extend(message(b'Z', b"I"));
                            socket.write_all(&taken).await.ok()?;
                        }
                        Fate::Hold => {}
                    }
                }
            });
        }
    });
    port
}

fn config(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("dbx")
        .connect_timeout(Duration::from_secs(10));
    config
}

/// The driver's error for one simple query on a session served with `fate`.
fn query_error(fate: Fate) -> tokio_postgres::Error {
    runtime().block_on(async {
        let port = backend(fate).await;
        let (client, connection) = config(port).connect(NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
            .simple_query("SELECT 1")
            .await
            .expect_err("the backend fails the query")
    })
}

fn pool(port: u16, size: usize) -> Pool {
    let manager = Manager::from_config(
        config(port),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_millis(50)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("pool")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn assert_unavailable(err: &StoreError) {
    assert_eq!(err.code(), "unavailable", "{err}");
    assert!(err.to_string().starts_with("unavailable: "), "{err}");
}

fn assert_unknown_outcome(err: &StoreError) {
    assert_eq!(err.code(), "storage", "{err}");
    assert!(err.to_string().contains("the outcome is unknown"), "{err}");
}

#[test]
fn a_closed_session_is_unavailable_before_the_commit_and_unknown_at_it() {
    let closed = query_error(Fate::Close);
    assert!(closed.is_closed(), "{closed:?}");
    assert_unavailable(&db(query_error(Fate::Close)));
    assert_unknown_outcome(&commit_error(closed));
}

#[test]
fn a_terminated_session_is_unavailable_before_the_commit_and_unknown_at_it() {
    let terminated = query_error(Fate::Terminate);
    assert_eq!(
        terminated.code(),
        Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
    );
    assert_unavailable(&db(query_error(Fate::Terminate)));
    assert_unknown_outcome(&commit_error(terminated));
}

#[test]
fn a_statement_error_is_storage_and_never_unavailable() {
    for err in [
        db(query_error(Fate::UniqueViolation)),
        commit_error(query_error(Fate::UniqueViolation)),
    ] {
        assert_eq!(err.code(), "storage", "{err}");
        assert!(!err.to_string().contains("unknown"), "{err}");
        // A lost race is still recognised through the error (the write is prepared again).
        assert!(crate::raced(&err), "{err}");
    }
}

#[test]
fn a_refused_connection_and_a_full_pool_are_unavailable() {
    runtime().block_on(async {
        let closed_port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let refused = pool(closed_port, 1)
            .get()
            .await
            .expect_err("nothing listens");
        assert_unavailable(&pool_error(refused));

        let full = pool(backend(Fate::Hold).await, 1);
        let _held = full.get().await.expect("the one connection");
        let waited = full.get().await.expect_err("the pool is full");
        assert_unavailable(&pool_error(waited));
    });
}

#[test]
fn a_refused_login_is_storage_not_unavailable() {
    runtime().block_on(async {
        let refused = pool(backend(Fate::RefuseLogin).await, 1)
            .get()
            .await
            .expect_err("the login is refused");
        let err = pool_error(refused);
        assert_eq!(err.code(), "storage", "{err}");
    });
}
