//! Loading and validating the configuration, adapter sections included.

use std::path::Path;
use std::process::ExitCode;

use bridge_config::{Config, Diagnostics, Loaded, did_you_mean};
use bridge_core::{CarryPolicy, CustomPolicy, DegradePolicy, DeliverySettings, Fallback};

use crate::registry;

/// Loads `path` and validates everything, each adapter's own settings included.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let mut loaded = Loaded::read(path);
    if let Some(config) = &loaded.config {
        for section in &config.adapters {
            match registry::factory(&section.type_name) {
                Some(factory) => {
                    let issues = factory.validate(&section.settings);
                    loaded.diagnostics.extend_relative(
                        &section.path,
                        issues.into_iter().map(|i| (i.path, i.message)),
                    );
                }
                None => {
                    let known = registry::type_names();
                    let hint = did_you_mean(&section.type_name, known.iter().copied())
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    loaded.diagnostics.push(
                        format!("{}.type", section.path),
                        format!(
                            "unknown adapter type {:?}{hint}; this build has: {}",
                            section.type_name,
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }
    loaded.finish()
}

/// `bridge check`: prints every problem, or a summary.
pub fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            let links: usize = config.rooms.iter().map(|r| r.links.len()).sum();
            println!(
                "{}: ok ({} adapters, {} rooms, {} links)",
                path.display(),
                config.adapters.len(),
                config.rooms.len(),
                links
            );
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            ExitCode::FAILURE
        }
    }
}

fn fallback(f: bridge_config::Fallback) -> Fallback {
    match f {
        bridge_config::Fallback::Fallback => Fallback::Fallback,
        bridge_config::Fallback::Drop => Fallback::Drop,
    }
}

/// The core's policy from the config's.
pub fn policy(d: &bridge_config::Degrade) -> DegradePolicy {
    DegradePolicy {
        reply: fallback(d.reply),
        edit: fallback(d.edit),
        reaction: fallback(d.reaction),
        redaction: fallback(d.redaction),
        moderation: fallback(d.moderation),
        custom: match d.custom {
            bridge_config::CustomPolicy::Drop => CustomPolicy::Drop,
            bridge_config::CustomPolicy::Notice => CustomPolicy::Notice,
        },
    }
}

/// The core's carry policy from the config's.
pub fn carry(c: &bridge_config::Carry) -> CarryPolicy {
    CarryPolicy {
        typing: c.typing,
        read_markers: c.read_markers,
        roles: c.roles,
        moderation: c.moderation,
    }
}

/// The core's delivery settings from the config's.
pub fn delivery(config: &Config) -> DeliverySettings {
    let d = &config.delivery;
    DeliverySettings {
        max_attempts: d.max_attempts,
        backoff_initial: d.backoff_initial(),
        backoff_max: d.backoff_max(),
        queue_capacity: d.queue_capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_core_agree_on_the_default_policy_and_settings() {
        // bridge-config has no dependency on the core, so its defaults are written twice:
        // this keeps the two from drifting apart.
        assert_eq!(
            policy(&bridge_config::Degrade::default()),
            DegradePolicy::default()
        );
        assert_eq!(
            carry(&bridge_config::Carry::default()),
            CarryPolicy::default()
        );
        let d = bridge_config::Delivery::default();
        let core = DeliverySettings::default();
        assert_eq!(d.max_attempts, core.max_attempts);
        assert_eq!(d.backoff_initial(), core.backoff_initial);
        assert_eq!(d.backoff_max(), core.backoff_max);
        assert_eq!(d.queue_capacity, core.queue_capacity);
    }
}
