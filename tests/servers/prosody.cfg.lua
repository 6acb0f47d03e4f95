-- Minimal Prosody 0.12 config for loopback integration tests (no TLS, no s2s).
-- Started by scripts/servers.sh with @DIR@ and the ports filled in.

-- Paths (everything under @DIR@)
data_path = "@DIR@/data"
pidfile  = "@DIR@/prosody.pid"
plugin_paths = {}            -- don't look in /var/lib/prosody/custom_plugins
run_as_root = true           -- only matters when prosodyctl/prosody runs as uid 0 (e.g. this box); harmless otherwise

-- Network: loopback only
interfaces           = { "127.0.0.1" }
c2s_ports            = { @C2S_PORT@ }
c2s_direct_tls_ports = {}
s2s_ports            = {}
s2s_interfaces       = {}
component_interfaces = { "127.0.0.1" }
component_ports      = { @COMPONENT_PORT@ }
http_interfaces      = { "127.0.0.1" }
http_ports           = { @HTTP_PORT@ }
https_ports          = {}

-- Modules: explicit, small set. s2s is disabled so nothing dials out.
modules_enabled = {
  -- NB: no "tls" module: even without certificates it would advertise STARTTLS and clients would try it
  "roster"; "saslauth"; "disco"; "ping"; "register";
  "presence"; "message"; "iq"; "version"; "uptime"; "time";
  "carbons"; "pep"; "private"; "vcard_legacy"; "blocklist";
  "admin_shell";   -- for `prosodyctl shell` (unix socket in data_path)
}
modules_disabled = { "s2s"; "offline" }

-- Tests: no TLS required, PLAIN allowed over cleartext, open in-band registration
c2s_require_encryption        = false
s2s_require_encryption        = false
allow_unencrypted_plain_auth  = true
allow_registration            = true
authentication                = "internal_hashed"
storage                       = "internal"
certificates                  = "@DIR@/certs"   -- empty dir; keeps Prosody from scanning /etc/prosody/certs

-- Don't throttle test traffic (mod_limits is not loaded; these are for reference)
-- limits = { c2s = { rate = "100mb/s" }; s2sin = { rate = "100mb/s" } }

log = {
  { levels = { min = "info" }, to = "console" };   -- stdout when run with -F
  -- { levels = { min = "debug" }, to = "file", filename = "@DIR@/prosody.log" };
}

VirtualHost "localhost"

Component "conference.localhost" "muc"
  restrict_room_creation   = false
  muc_room_default_public  = true
  muc_room_default_persistent = false
  max_history_messages     = 50
  muc_room_locking         = false   -- rooms usable immediately on first join (no config form step)
  -- muc_mam: room archive (XEP-0313) for catch-up after a restart.
  -- muc_moderation: XEP-0425 moderation by moderators; from the Debian package prosody-modules
  -- (2023 snapshot, which speaks the old urn:xmpp:message-moderate:0 wrapped in fastening).
  modules_enabled          = { "muc_mam"; "muc_moderation" }
  muc_log_by_default       = true

-- A MUC service that keeps each new room locked until its creator configures it (XEP-0045
-- §10.1.2), as many servers do: the bridge answers the instant-room form itself.
Component "locked.localhost" "muc"
  restrict_room_creation   = false
  muc_room_locking         = true
  modules_enabled          = { "muc_mam" }
  muc_log_by_default       = true

-- XEP-0363 HTTP upload (Prosody 0.12 module); slots are served on the http port above.
Component "upload.localhost" "http_file_share"
  http_file_share_size_limit = 10*1024*1024
  -- Left empty on purpose: an empty set lets every local host upload (users and the bridge's
  -- component domain); a non-empty list would allow *only* the JIDs/hosts listed.
  http_file_share_access     = {}
  http_host                  = "127.0.0.1"   -- the Host: of the slot URLs (else: "Unknown host")
  http_external_url          = "http://127.0.0.1:@HTTP_PORT@/"

-- XEP-0114 external component for the bridge
Component "bridge.localhost"
  component_secret = "bridgesecret"

