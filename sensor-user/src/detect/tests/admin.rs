//! `admin_api.address`, `admin_api.new_token`, and user exemptions.

use super::*;
use crate::detect::Severity;

fn admin(endpoint: &'static str) -> Observation {
    req(endpoint, Class::Admin).at_ip("127.0.0.1")
}

#[test]
fn admin_from_loopback_by_a_new_token_is_info_once() {
    let mut d = detector(|_| {});
    let alerts = d.observe_request(T0, &admin("admin.users"));
    assert_eq!(brief(&alerts), [("admin_api.new_token", 0, 1)]);
    let a = &alerts[0];
    assert_eq!(a.severity, Severity::Info);
    assert_eq!(a.subject.token, Some(fp(1)));
    assert_eq!(a.subject.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        a.summary,
        "@mallory:example.org (tfp_0000000000000001) from 127.0.0.1 used the admin API for \
         the first time (admin.users)"
    );
    let again = feed(
        &mut d,
        (1..50).map(|i| (T0 + i * SECOND, admin("admin.rooms"))),
    );
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn admin_from_elsewhere_is_critical_and_escalates_by_doubling() {
    let mut d = detector(|c| c.admin_api.new_token = false);
    let outside = || admin("admin.users").at_ip("198.51.100.9");
    let alerts = feed(&mut d, (0..9).map(|i| (T0 + i * SECOND, outside())));
    let counts: Vec<u64> = alerts.iter().map(|a| a.observed).collect();
    assert_eq!(counts, [1, 2, 4, 8]);
    let a = &alerts[0];
    assert_eq!(
        (a.rule, a.severity, a.threshold, a.window_s),
        ("admin_api.address", Severity::Critical, 1, 600)
    );
    assert_eq!(a.subject.client_ip.as_deref(), Some("198.51.100.9"));
    assert_eq!(
        a.summary,
        "198.51.100.9, outside admin_api.allow, called the admin API 1 time in 10 min \
         (last: admin.users)"
    );
}

#[test]
fn admin_by_a_new_token_from_elsewhere_raises_both() {
    let mut d = detector(|_| {});
    let alerts = d.observe_request(T0, &admin("admin.users").at_ip("198.51.100.9"));
    assert_eq!(
        brief(&alerts),
        [("admin_api.new_token", 0, 1), ("admin_api.address", 600, 1)]
    );
    assert_eq!(alerts[0].severity, Severity::Warning);
}

#[test]
fn admin_without_a_token_or_an_address() {
    let mut d = detector(|_| {});
    let no_token = admin("admin.users").tokenless().at_ip("198.51.100.9");
    assert_eq!(
        brief(&d.observe_request(T0, &no_token)),
        [("admin_api.address", 600, 1)]
    );
    let nowhere = Observation {
        client_ip: None,
        ..admin("admin.users").tokenless()
    };
    let alerts = d.observe_request(T0, &nowhere);
    assert_eq!(brief(&alerts), [("admin_api.address", 600, 1)]);
    assert_eq!(alerts[0].subject.client_ip, None);
    assert!(
        alerts[0].summary.starts_with("an unknown address, outside"),
        "{}",
        alerts[0].summary
    );
}

#[test]
fn the_allowlist_takes_networks_and_ipv4_mapped_addresses() {
    let mut d = detector(|c| c.admin_api.allow = vec!["10.1.0.0/16".into(), "::1".into()]);
    for ip in ["10.1.2.3", "::ffff:10.1.2.3", "::1"] {
        let alerts = d.observe_request(T0, &admin("admin.users").tokenless().at_ip(ip));
        assert!(alerts.is_empty(), "{ip}: {alerts:?}");
    }
    let alerts = d.observe_request(T0, &admin("admin.users").tokenless().at_ip("127.0.0.1"));
    assert_eq!(
        brief(&alerts),
        [("admin_api.address", 600, 1)],
        "loopback is no longer allowed"
    );
}

#[test]
fn known_tokens_are_not_new() {
    let mut d = detector(|c| c.admin_api.known_tokens = vec![fp(1)]);
    assert!(d.observe_request(T0, &admin("admin.users")).is_empty());
    let alerts = d.observe_request(T0, &admin("admin.users").by(2));
    assert_eq!(brief(&alerts), [("admin_api.new_token", 0, 1)]);
}

#[test]
fn the_first_seen_set_is_bounded() {
    let mut d = detector(|c| c.admin_api.max_known_tokens = 2);
    let stream = [1, 2, 3, 1].map(|n| (T0, admin("admin.users").by(n)));
    let alerts = feed(&mut d, stream);
    assert_eq!(
        alerts.len(),
        4,
        "token 1 was forgotten when token 3 came: {alerts:?}"
    );
}

#[test]
fn the_admin_rules_can_be_turned_off() {
    let mut d = detector(|c| c.admin_api.enabled = false);
    let alerts = d.observe_request(T0, &admin("admin.users").at_ip("198.51.100.9"));
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn exempt_users_count_toward_no_volume_or_breadth_but_admin_still_applies() {
    let bot = "@backup:example.org";
    let mut d = detector(|c| c.exempt_users = vec![bot.into()]);
    let as_bot = |o: Observation| Observation {
        user: Some(bot.into()),
        ..o
    };
    let pull = (0..5_000u64).map(|i| (T0 + i * 10, as_bot(download(&format!("m{i}")).bytes(MIB))));
    let alerts = feed(&mut d, pull);
    assert!(alerts.is_empty(), "{:?}", brief(&alerts));
    let alerts = d.observe_request(
        T0 + 60 * SECOND,
        &as_bot(admin("admin.users").at_ip("198.51.100.9")),
    );
    assert_eq!(
        brief(&alerts),
        [("admin_api.new_token", 0, 1), ("admin_api.address", 600, 1)]
    );
}
