//! Walks a parsed document, building the typed [`Config`] and reporting
//! every problem found.

mod fields;
mod sections;

use std::net::SocketAddr;
use std::path::PathBuf;

use toml_edit::TableLike;

use crate::describe::show;
use crate::diagnostics::Diagnostics;
use crate::model::{
    BridgeSection, Carry, Config, CustomPolicy, Degrade, Delivery, Fallback, LogFormat,
};
use crate::secret::SecretRef;
use crate::suggest::did_you_mean;
use fields::{Table, to_toml};

/// Keys of the top-level table.
const ROOT_KEYS: &[&str] = &["bridge", "delivery", "adapter", "room"];
/// Keys of `[bridge]`.
const BRIDGE_KEYS: &[&str] = &[
    "data_dir",
    "log_format",
    "log_level",
    "http_addr",
    "metrics_addr",
    "provisioning_token",
    "admins",
    "management",
    "worker_threads",
    "keep_days",
];
/// Keys of `[delivery]`.
const DELIVERY_KEYS: &[&str] = &[
    "max_attempts",
    "backoff_initial_ms",
    "backoff_max_ms",
    "queue_capacity",
    "degrade",
    "carry",
];
/// Keys of `[delivery.degrade]` and `[room.degrade]`.
const DEGRADE_KEYS: &[&str] = &[
    "reply",
    "edit",
    "reaction",
    "redaction",
    "moderation",
    "custom",
];
/// Keys of `[delivery.carry]` and `[room.carry]`.
const CARRY_KEYS: &[&str] = &["typing", "read_markers", "roles", "moderation"];
/// Level names accepted by `tracing`'s `EnvFilter`.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Builds the best configuration it can from the document's root table,
/// pushing a diagnostic for every problem. The result is only meaningful
/// when no diagnostic was pushed.
pub(crate) fn config(d: &mut Diagnostics, root: &dyn TableLike) -> Config {
    let root = Table {
        table: root,
        path: "",
    };
    root.check_keys(d, ROOT_KEYS);
    let mut bridge = bridge(d, root);
    let delivery = delivery(d, root);
    let (adapters, adapter_ids) = sections::adapters(d, root);
    let rooms = sections::rooms(d, root, &adapter_ids, &delivery);
    if let Some(item) = root.item("bridge")
        && let Some(table) = item.as_table_like()
    {
        let table = Table {
            table,
            path: "bridge",
        };
        (bridge.admins, bridge.management) = sections::admin(d, table, &adapter_ids, &rooms);
    }
    Config {
        bridge,
        delivery,
        adapters,
        rooms,
    }
}

fn bridge(d: &mut Diagnostics, root: Table<'_>) -> BridgeSection {
    let mut bridge = BridgeSection {
        data_dir: PathBuf::new(),
        log_format: LogFormat::default(),
        log_level: BridgeSection::DEFAULT_LOG_LEVEL.to_owned(),
        http_addr: None,
        metrics_addr: None,
        provisioning_token: None,
        admins: Vec::new(),
        management: Vec::new(),
        worker_threads: BridgeSection::DEFAULT_WORKER_THREADS,
        keep_days: BridgeSection::DEFAULT_KEEP_DAYS,
    };
    if root.item("bridge").is_none() {
        d.push("bridge", "missing required section [bridge]");
        return bridge;
    }
    let Some(section) = root.table(d, "bridge") else {
        return bridge;
    };
    let table = section.view();
    table.check_keys(d, BRIDGE_KEYS);
    if let Some(dir) = table.non_empty_string(d, "data_dir", true) {
        bridge.data_dir = PathBuf::from(dir);
    }
    let formats = [("human", LogFormat::Human), ("json", LogFormat::Json)];
    if let Some(format) = table.choice(d, "log_format", &formats) {
        bridge.log_format = format;
    }
    if let Some(level) = table.string(d, "log_level", false) {
        match check_log_level(level) {
            Ok(()) => bridge.log_level = level.to_owned(),
            Err(message) => d.push(table.path("log_level"), message),
        }
    }
    let most = i64::from(BridgeSection::MAX_WORKER_THREADS);
    if let Some(n) = table.integer(d, "worker_threads", 0, most) {
        bridge.worker_threads = u16::try_from(n).unwrap_or(BridgeSection::DEFAULT_WORKER_THREADS);
    }
    let most = i64::from(BridgeSection::MAX_KEEP_DAYS);
    if let Some(n) = table.integer(d, "keep_days", 0, most) {
        bridge.keep_days = u32::try_from(n).unwrap_or(BridgeSection::DEFAULT_KEEP_DAYS);
    }
    let http_addr = socket_addr(d, table, "http_addr");
    bridge.metrics_addr = socket_addr(d, table, "metrics_addr");
    if table.item("metrics_addr").is_some() && table.item("http_addr").is_some() {
        d.push(
            table.path("metrics_addr"),
            "metrics_addr is the former name of http_addr; keep only http_addr",
        );
    }
    bridge.http_addr = http_addr.or(bridge.metrics_addr);
    if let Some(item) = table.item("provisioning_token") {
        let path = table.path("provisioning_token");
        match to_toml(item).map(|value| SecretRef::parse(&value, &path)) {
            Some(Ok(token)) => {
                if let SecretRef::Inline(text) = &token
                    && text.len() < BridgeSection::MIN_TOKEN_LEN
                {
                    d.push(
                        path.as_str(),
                        format!(
                            "the token is too short ({} bytes); use at least {} random \
                             characters, e.g. the output of `openssl rand -hex 32`",
                            text.len(),
                            BridgeSection::MIN_TOKEN_LEN
                        ),
                    );
                }
                if table.item("http_addr").is_none() && table.item("metrics_addr").is_none() {
                    d.push(
                        path.as_str(),
                        "the provisioning API is served on http_addr, which is not set",
                    );
                }
                bridge.provisioning_token = Some(token);
            }
            Some(Err(diagnostic)) => d.push_diagnostic(diagnostic),
            None => {}
        }
    }
    bridge
}

/// An optional `IP:port` value.
fn socket_addr(d: &mut Diagnostics, table: Table<'_>, key: &str) -> Option<SocketAddr> {
    let text = table.string(d, key, false)?;
    match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            d.push(
                table.path(key),
                format!(
                    "expected a socket address like \"127.0.0.1:9184\", got {}",
                    show(text)
                ),
            );
            None
        }
    }
}

/// Checks a `tracing` `EnvFilter` directive string as far as can be done
/// without `tracing`: every `target=level` must name a level, and a bare
/// word close to a level name is taken for a misspelling of it.
fn check_log_level(text: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a level (trace, debug, info, warn, error, off) or \
                            directives like \"info,bridge_core=debug\"";
    if text.trim().is_empty() {
        return Err(format!("{EXPECTED}, got an empty string"));
    }
    let is_level = |word: &str| {
        LEVELS.contains(&word.to_ascii_lowercase().as_str())
            || matches!(word, "0" | "1" | "2" | "3" | "4" | "5")
    };
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let tail = directive
            .rfind(']')
            .map_or(directive, |end| &directive[end + 1..]);
        if let Some(equals) = tail.rfind('=') {
            let level = tail[equals + 1..].trim();
            if !is_level(level) {
                let suffix = crate::suggest::suggestion_suffix(level, LEVELS.iter().copied());
                return Err(format!(
                    "{EXPECTED}, got level {} in {}{suffix}",
                    show(level),
                    show(directive)
                ));
            }
        } else if !directive.contains(['[', ':'])
            && !is_level(directive)
            && let Some(level) = did_you_mean(directive, LEVELS.iter().copied())
        {
            return Err(format!(
                "{EXPECTED}, got {} (did you mean {level:?}?)",
                show(directive)
            ));
        }
    }
    Ok(())
}

fn delivery(d: &mut Diagnostics, root: Table<'_>) -> Delivery {
    let mut delivery = Delivery::default();
    let Some(section) = root.table(d, "delivery") else {
        return delivery;
    };
    let table = section.view();
    table.check_keys(d, DELIVERY_KEYS);
    let attempts_limit = i64::from(Delivery::MAX_ATTEMPTS_LIMIT);
    let backoff_limit = i64::try_from(Delivery::BACKOFF_LIMIT_MS).unwrap_or(i64::MAX);
    let queue_limit = i64::try_from(Delivery::QUEUE_CAPACITY_LIMIT).unwrap_or(i64::MAX);
    if let Some(n) = table.integer(d, "max_attempts", 1, attempts_limit) {
        delivery.max_attempts = u32::try_from(n).unwrap_or(Delivery::DEFAULT_MAX_ATTEMPTS);
    }
    let initial = table.integer(d, "backoff_initial_ms", 1, backoff_limit);
    if let Some(n) = initial {
        delivery.backoff_initial_ms =
            u64::try_from(n).unwrap_or(Delivery::DEFAULT_BACKOFF_INITIAL_MS);
    }
    let max = table.integer(d, "backoff_max_ms", 1, backoff_limit);
    if let Some(n) = max {
        delivery.backoff_max_ms = u64::try_from(n).unwrap_or(Delivery::DEFAULT_BACKOFF_MAX_MS);
    }
    if let Some(n) = table.integer(d, "queue_capacity", 1, queue_limit) {
        delivery.queue_capacity = usize::try_from(n).unwrap_or(Delivery::DEFAULT_QUEUE_CAPACITY);
    }
    let (low, high) = (delivery.backoff_initial_ms, delivery.backoff_max_ms);
    if low > high {
        if max.is_some() {
            d.push(
                table.path("backoff_max_ms"),
                format!("must be at least backoff_initial_ms ({low}), got {high}"),
            );
        } else if initial.is_some() {
            d.push(
                table.path("backoff_initial_ms"),
                format!("must be at most backoff_max_ms ({high}, the default), got {low}"),
            );
        }
    }
    if let Some(section) = table.table(d, "degrade") {
        delivery.degrade = degrade(d, section.view(), Degrade::default());
    }
    if let Some(section) = table.table(d, "carry") {
        delivery.carry = carry(d, section.view(), Carry::default());
    }
    delivery
}

/// Reads a carry table; keys it leaves out keep their value in `base`.
fn carry(d: &mut Diagnostics, table: Table<'_>, base: Carry) -> Carry {
    table.check_keys(d, CARRY_KEYS);
    Carry {
        typing: table.boolean(d, "typing").unwrap_or(base.typing),
        read_markers: table
            .boolean(d, "read_markers")
            .unwrap_or(base.read_markers),
        roles: table.boolean(d, "roles").unwrap_or(base.roles),
        moderation: table.boolean(d, "moderation").unwrap_or(base.moderation),
    }
}

/// Reads a degrade table; keys it leaves out keep their value in `base`.
fn degrade(d: &mut Diagnostics, table: Table<'_>, base: Degrade) -> Degrade {
    table.check_keys(d, DEGRADE_KEYS);
    let fallback = [("fallback", Fallback::Fallback), ("drop", Fallback::Drop)];
    let custom = [
        ("drop", CustomPolicy::Drop),
        ("notice", CustomPolicy::Notice),
    ];
    Degrade {
        reply: table.choice(d, "reply", &fallback).unwrap_or(base.reply),
        edit: table.choice(d, "edit", &fallback).unwrap_or(base.edit),
        reaction: table
            .choice(d, "reaction", &fallback)
            .unwrap_or(base.reaction),
        redaction: table
            .choice(d, "redaction", &fallback)
            .unwrap_or(base.redaction),
        moderation: table
            .choice(d, "moderation", &fallback)
            .unwrap_or(base.moderation),
        custom: table.choice(d, "custom", &custom).unwrap_or(base.custom),
    }
}

#[cfg(test)]
mod tests {
    use super::check_log_level;

    #[test]
    fn log_levels() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "bridge_core=debug",
            "info,bridge_core=trace,sled=warn",
            "bridge",
            "bridge_core::outbox=debug",
            "bridge[deliver{link=a}]=trace",
            "bridge[deliver{link=a}]",
            "3",
            "info,",
        ] {
            assert_eq!(check_log_level(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "  ",
            "inof",
            "warm",
            "bridge=verbose",
            "a=",
            "info,x=lots",
        ] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
        let message = check_log_level("inof").err().unwrap_or_default();
        assert!(
            message.ends_with("got \"inof\" (did you mean \"info\"?)"),
            "{message}"
        );
    }
}
