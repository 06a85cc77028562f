//! The payments crate's integration tests, in one binary: the test provider, the Stripe
//! adapter against a local server, webhooks, the card-data guard and the configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config;
mod guard;
mod mock_stripe;
mod stripe;
mod test_provider;
mod webhook;
