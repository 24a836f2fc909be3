//! A payload that does not fit the type a behaviour reads it as is said once, in a warning.
//! Its own test program: the warning is said once a process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agora::testing::Harness;
use agora::{Behaviour, BehaviourError, Context, Effects, Message};
use serde_json::json;

#[derive(Clone, serde::Deserialize)]
struct Bid {
    #[allow(dead_code)]
    price: f64,
}

struct Bidder;

impl Behaviour for Bidder {
    type State = ();

    fn init(&self, _ctx: &mut Context<'_>) -> Result<(), BehaviourError> {
        Ok(())
    }

    fn on_message(
        &self,
        _state: &mut (),
        _msg: &Message,
        _ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        Ok(Effects::none())
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_first_payload_that_does_not_fit_its_type_is_named_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let fits = Harness::<Bidder>::message_with_data("buyer_1", "bid", json!({ "price": 3.5 }));
        assert!(fits.payload::<Bid>().is_some());
        let none = Harness::<Bidder>::message_from("buyer_1", "no data");
        assert!(none.payload::<Bid>().is_none());
        let misspelt = Harness::<Bidder>::message_with_data("buyer_2", "bid", json!({ "prize": 3.5 }));
        assert!(misspelt.payload::<Bid>().is_none());
        let wrong = Harness::<Bidder>::message_with_data("buyer_3", "bid", json!({ "price": "high" }));
        assert!(wrong.payload::<Bid>().is_none());
    });
    let said = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("WARN"), "{said}");
    assert!(
        said.contains(
            "the data of a message from buyer_2 did not decode as payload_warning::Bid: missing field `price`"
        ),
        "{said}"
    );
    // A value that is not an object is wrapped, as `Outgoing::with_data` wraps it.
    let wrapped = Harness::<Bidder>::message_with_data("buyer_4", "bid", json!(7));
    assert_eq!(wrapped.data_u64("value"), Some(7));
}
