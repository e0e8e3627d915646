//! Unit tests for endpoint classification. Targets are written as Element (matrix-js-sdk),
//! matrix-nio and scraping scripts send them; `edge::every_row_is_reachable_with_each_of_its_methods` drives every
//! row of the table.

mod admin;
mod client;
mod edge;
mod media;
mod rooms;

use super::{Class, Endpoint, classify};

/// Classifies and asserts the name and class, returning the endpoint for further checks.
fn check(method: &str, target: &str, name: &str, class: Class) -> Endpoint {
    let endpoint = classify(method, target);
    assert_eq!(
        (endpoint.name, endpoint.class),
        (name, class),
        "{method} {target} classified as {endpoint:?}"
    );
    endpoint
}

/// Asserts that an endpoint carries no identifiers and no sync flags.
fn assert_bare(endpoint: &Endpoint) {
    assert_eq!(
        (
            &endpoint.room,
            &endpoint.event_id,
            &endpoint.user_id,
            &endpoint.media,
            endpoint.full_state,
            endpoint.since,
        ),
        (&None, &None, &None, &None, None, None),
        "{endpoint:?} should carry nothing"
    );
}

fn owned(s: &str) -> Option<String> {
    Some(s.to_owned())
}
