//! Publish-target routing, payload modes, priorities and the retry schedule (`docs/plugins.md`).

use eventdbx_core::plugin::{
    resolve_targets, PayloadMode, Priority, PublishTarget, RetryPolicy, RoutablePlugin,
};

fn plugin(id: &str, enabled: bool, emit: bool, mode: PayloadMode) -> RoutablePlugin {
    RoutablePlugin {
        id: id.into(),
        enabled,
        emit_events: emit,
        mode,
    }
}

fn target(plugin: &str, mode: Option<&str>, priority: Option<&str>) -> PublishTarget {
    PublishTarget {
        plugin: plugin.into(),
        mode: mode.map(Into::into),
        priority: priority.map(Into::into),
    }
}

fn plugins() -> Vec<RoutablePlugin> {
    vec![
        plugin("webhook", true, true, PayloadMode::StateOnly),
        plugin("quiet", true, false, PayloadMode::All),
        plugin("off", false, true, PayloadMode::All),
        plugin("fraud-worker", true, true, PayloadMode::All),
    ]
}

fn message(targets: &[PublishTarget]) -> String {
    resolve_targets(Some(targets), &plugins())
        .expect_err("refused")
        .to_string()
}

#[test]
fn broadcast_reaches_enabled_emitting_plugins_in_their_mode() {
    for targets in [None, Some(&[][..])] {
        let routes = resolve_targets(targets, &plugins()).expect("routes");
        let names: Vec<_> = routes.iter().map(|r| r.plugin.as_str()).collect();
        assert_eq!(names, ["webhook", "fraud-worker"]);
        assert_eq!(routes[0].mode, PayloadMode::StateOnly);
        assert!(routes.iter().all(|r| r.priority == Priority::Normal));
    }
}

#[test]
fn named_targets_resolve_modes_priorities_and_skip_duplicates() {
    let targets = [
        target(" WEBHOOK ", Some("ASYNC"), None),
        target("fraud-worker", Some("event-only"), Some("High")),
        target("webhook", Some("all"), Some("low")),
    ];
    let routes = resolve_targets(Some(&targets), &plugins()).expect("routes");
    assert_eq!(routes.len(), 2);
    assert_eq!(
        (
            routes[0].plugin.as_str(),
            routes[0].mode,
            routes[0].priority
        ),
        ("webhook", PayloadMode::StateOnly, Priority::Normal)
    );
    assert_eq!(
        (routes[1].mode, routes[1].priority),
        (PayloadMode::EventOnly, Priority::High)
    );
}

#[test]
fn invalid_targets_carry_the_spec_messages() {
    assert_eq!(
        message(&[target("  ", None, None)]),
        "invalid schema: publish target plugin cannot be empty"
    );
    assert_eq!(
        message(&[target("webhook", Some("Bogus"), None)]),
        "invalid schema: invalid publish mode 'bogus'"
    );
    assert_eq!(
        message(&[target("webhook", None, Some("urgent"))]),
        "invalid schema: invalid publish priority 'urgent'"
    );
    assert_eq!(
        message(&[target("nope", None, None)]),
        "invalid schema: plugin 'nope' is not configured"
    );
    assert_eq!(
        message(&[target("off", None, None)]),
        "invalid schema: plugin 'off' is not configured"
    );
    assert_eq!(
        message(&[target("quiet", None, None)]),
        "invalid schema: plugin 'quiet' is disabled"
    );
}

#[test]
fn backoff_follows_the_spec_schedule_with_bounded_jitter() {
    let policy = RetryPolicy::default();
    for (attempts, base) in [
        (0, 1000),
        (1, 1000),
        (2, 2000),
        (3, 4000),
        (4, 10_000),
        (9, 10_000),
    ] {
        for seed in 0..50 {
            let wait = policy.backoff_ms(attempts, seed);
            assert!(
                (base..=base + base / 10).contains(&wait),
                "{attempts}: {wait}"
            );
        }
    }
    assert!(!policy.exhausted(9) && policy.exhausted(10));
    assert_eq!(
        PayloadMode::parse("Event-And-Schema"),
        Some(PayloadMode::EventAndSchema)
    );
    assert!(Priority::High.rank() < Priority::Low.rank());
}
