//! The library's error type.
//!
//! Every fallible public function of `parkd_sim` returns [`SimError`]. Errors that happen on a
//! live connection after the run has started (a refused connect, a dropped socket) are not
//! fatal: they are counted in the run's report and the connection retries with a backoff.

use parkd_core::ids::IdError;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A generated or configured identifier breaks the `parkd_core::ids` grammar.
    #[error("invalid identifier {value:?}: {source}")]
    InvalidId {
        /// The offending identifier.
        value: String,
        /// Why it is not valid.
        source: IdError,
    },
    /// Not every connection reached the broker in time.
    #[error("{connected} of {wanted} MQTT connections to {endpoint} came up in time: {detail}")]
    Connect {
        /// The broker address.
        endpoint: String,
        /// How many connections came up.
        connected: usize,
        /// How many were needed.
        wanted: usize,
        /// The last connection error seen, if any.
        detail: String,
    },
}

impl SimError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        SimError::InvalidConfig(message.into())
    }
}
