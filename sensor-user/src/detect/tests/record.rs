//! Conversions at the edges: a `RequestRecord` into an `Observation`, an `Alert` into its
//! JSON record.

use super::*;
use crate::client_ip::AddressSource;
use crate::detect::HealthIssue;
use crate::identity::TokenSource;
use crate::output::RequestRecord;

fn record() -> RequestRecord {
    RequestRecord {
        ts: "2026-09-21T14:13:20.000Z".into(),
        pid: Some(42),
        local: Some("127.0.0.1:8008".into()),
        peer: Some("127.0.0.1:50000".into()),
        cookie: 77,
        method: Some("GET".into()),
        path: Some("/_matrix/client/v1/media/download/example.org/abc".into()),
        endpoint: "client.media.download",
        class: Some(Class::MediaDownload),
        client_ip: Some(IP.into()),
        client_ip_source: Some(AddressSource::XForwardedFor),
        forwarding_ignored: false,
        token: Some(fp(1)),
        token_source: Some(TokenSource::Header),
        user: Some(USER.into()),
        bytes_in: 512,
        bytes_out: 90_000,
        room: None,
        event_id: None,
        target_user: None,
        media_server: Some("example.org".into()),
        media_id: Some("abc".into()),
        full_state: None,
        since: None,
        head: "parsed",
        complete: true,
    }
}

#[test]
fn an_observation_takes_what_the_rules_need_from_a_request_record() {
    let obs = Observation::from(&record());
    assert_eq!(obs.cookie, 77);
    assert_eq!(
        (obs.endpoint, obs.class),
        ("client.media.download", Some(Class::MediaDownload))
    );
    assert_eq!(
        (obs.client_ip.as_deref(), obs.token, obs.user.as_deref()),
        (Some(IP), Some(fp(1)), Some(USER))
    );
    let media = obs.media.expect("media");
    assert_eq!(
        (media.server.as_str(), media.media_id.as_str()),
        ("example.org", "abc")
    );
    assert_eq!((obs.bytes_in, obs.bytes_out), (512, 90_000));
    // A media server without an ID is no media.
    let half = RequestRecord {
        media_id: None,
        ..record()
    };
    assert_eq!(Observation::from(&half).media, None);
}

fn admin_from_outside() -> Observation {
    req("admin.users", Class::Admin).at_ip("198.51.100.9")
}

#[test]
fn the_record_has_rfc3339_times_and_lowercase_severity() {
    let mut d = detector(|_| {});
    let alerts = d.observe_request(T0 + 123, &admin_from_outside());
    let record = alerts[1].to_record(T0 + 456);
    let v = serde_json::to_value(&record).unwrap();
    assert_eq!(v["ts"], "2026-09-21T14:13:20.456Z");
    assert_eq!(v["first_seen"], "2026-09-21T14:13:20.123Z");
    assert_eq!(v["last_seen"], "2026-09-21T14:13:20.123Z");
    assert_eq!(v["rule"], "admin_api.address");
    assert_eq!(v["severity"], "critical");
    assert_eq!(
        (
            v["window_s"].as_u64(),
            v["observed"].as_u64(),
            v["threshold"].as_u64()
        ),
        (Some(600), Some(1), Some(1))
    );
    assert_eq!(v["subject"]["client_ip"], "198.51.100.9");
    assert!(v["subject"]["user"].is_null() && v["subject"]["token"].is_null());
    assert_eq!(v["evidence"]["endpoint"], "admin.users");
    assert_eq!(v["evidence"]["saturated"], false);
    assert_eq!(v["evidence"]["top"], serde_json::json!([]));
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("198.51.100.9, outside")
    );
    let alert = serde_json::to_value(&alerts[0]).unwrap();
    assert_eq!(alert["subject"]["token"], "tfp_0000000000000001");
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["first_seen_ms"], T0 + 123);
}

#[test]
fn health_evidence_is_tagged_by_issue() {
    let issue = HealthIssue::Drops {
        place: "ringbuf".into(),
        lost: 3,
        total: 10,
    };
    let v = serde_json::to_value(issue).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"issue": "drops", "place": "ringbuf", "lost": 3, "total": 10})
    );
    let v = serde_json::to_value(HealthIssue::ProcessGone { pid: 7 }).unwrap();
    assert_eq!(v, serde_json::json!({"issue": "process_gone", "pid": 7}));
}
