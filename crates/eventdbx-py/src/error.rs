//! The one mapping from the client's [`Error`] onto the exceptions of `eventdbx.exceptions`.

use eventdbx_client::{Error, ErrorKind};
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;

/// The exception class (by name in `eventdbx.exceptions`) for an error.
fn class_name(err: &Error) -> &'static str {
    match err.kind() {
        ErrorKind::Connection | ErrorKind::Closed => "EventDBXConnectionError",
        ErrorKind::Timeout => "EventDBXTimeoutError",
        ErrorKind::Handshake if err.is_token_rejected() => "EventDBXTokenRejectedError",
        ErrorKind::Handshake => "EventDBXHandshakeError",
        ErrorKind::Protocol => "EventDBXProtocolError",
        ErrorKind::RequestTooLarge => "EventDBXRequestTooLargeError",
        ErrorKind::Unsupported => "EventDBXUnsupportedError",
        ErrorKind::InvalidArgument => "EventDBXArgumentError",
        // Only the codes a server sends (the server's and the domain's `code()`); any other
        // is an `EventDBXAPIError` with that code.
        ErrorKind::Server => match err.code() {
            "invalid_token" | "token_expired" => "EventDBXAuthenticationError",
            "unauthorized" => "EventDBXPermissionError",
            "aggregate_not_found" => "EventDBXNotFoundError",
            "aggregate_exists" => "EventDBXAlreadyExistsError",
            "version_conflict" | "idempotency_conflict" | "aggregate_archived" => {
                "EventDBXConflictError"
            }
            "invalid_schema" | "schema_violation" | "invalid_cursor" => "EventDBXValidationError",
            // A size refusal is a validation failure to callers (it was `invalid_schema`).
            "payload_too_large" => "EventDBXValidationError",
            "tenant_quota" => "EventDBXQuotaError",
            _ => "EventDBXAPIError",
        },
        // A kind added to the client later: the parent class.
        _ => "EventDBXError",
    }
}

/// The Python exception for a client error: the class of `eventdbx.exceptions` that
/// [`class_name`] names (falling back to `EventDBXError`), with the client's code, message and
/// retriability.
///
/// A signal handler that raises (Ctrl-C's `KeyboardInterrupt`) wins over the client's error:
/// it is raised pending or not, and is never folded into the fallback's message.
pub(crate) fn to_py_err(py: Python<'_>, err: &Error) -> PyErr {
    if let Err(interrupt) = py.check_signals() {
        return interrupt;
    }
    exception(py, err)
}

/// [`to_py_err`] without the look at signals: the error of an awaited call, set on its
/// `asyncio.Future` by the event loop, which runs the signal handlers itself.
pub(crate) fn exception(py: Python<'_>, err: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("eventdbx.exceptions")?;
        let class = module
            .getattr(class_name(err))
            .or_else(|_| module.getattr("EventDBXError"))?;
        let code = if err.is_token_rejected() {
            "handshake"
        } else {
            err.code()
        };
        let instance = class.call1((err.message(), code, err.is_retriable()))?;
        Ok(PyErr::from_value(instance))
    };
    // Only a broken installation (no exceptions module) ends here, or an exception that is not
    // an `Exception` (`KeyboardInterrupt`, `SystemExit`) raised while importing, which must
    // propagate as itself.
    build().unwrap_or_else(|import_error| {
        if !import_error.is_instance_of::<PyException>(py) {
            return import_error;
        }
        PyRuntimeError::new_err(format!(
            "{err} (and eventdbx.exceptions failed: {import_error})"
        ))
    })
}
