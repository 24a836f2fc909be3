//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use agora::Message;

/// Runs a future to completion on a fresh actix system, as `agora run` does.
pub fn block_on<F: Future>(future: F) -> F::Output {
    actix_rt::System::new().block_on(future)
}

pub fn message(sender: &str, seq: u64, tick: Option<u64>, to: Option<&str>, content: &str) -> Arc<Message> {
    Arc::new(Message {
        tick,
        sender_id: Arc::from(sender),
        seq: Some(seq),
        to: to.map(Arc::from),
        content: content.to_string(),
        data: None,
    })
}

pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
pub mod conformance;
