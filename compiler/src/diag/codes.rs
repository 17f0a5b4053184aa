//! Every diagnostic code polc emits, in one place. `lang-spec/REFERENCE.md`
//! has a table of them with a bad example each, and `snapshots/diagnostics/`
//! holds one `.pol` file per code (a test checks both stay complete).
//!
//! Errors are `E0xxx` (the input is invalid: exit 1); warnings are `W0xxx`
//! (valid, but likely not what was meant).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code {
    pub id: &'static str,
    /// Kebab-case name, used for the bad-example file names.
    pub name: &'static str,
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $konst:ident = $id:literal, $name:literal;)*) => {
        $( $(#[doc = $doc])* pub const $konst: Code = Code { id: $id, name: $name }; )*
        /// All codes, in numeric order.
        pub const ALL: &[Code] = &[$($konst),*];
    };
}

codes! {
    /// `policy p { select {a=b} ingress { allow x from {a=b} } }` (missing `:`)
    SYNTAX = "E0001", "syntax";
    /// `allow x: from $nowhere`
    UNKNOWN_NAME = "E0002", "unknown-name";
    /// two `policy web { ... }` in one policy set
    DUPLICATE_DEFINITION = "E0003", "duplicate-definition";
    /// `allow web: ...` twice in one policy
    DUPLICATE_RULE_NAME = "E0004", "duplicate-rule-name";
    /// `to 10.0.0.300/8`, `to 10.0.0.0/33`
    INVALID_CIDR = "E0005", "invalid-cidr";
    /// `to 10.1.2.3/8`: bits set past the prefix length
    CIDR_HOST_BITS = "E0006", "cidr-host-bits";
    /// `on tcp/0`, `on tcp/70000`
    PORT_OUT_OF_RANGE = "E0007", "port-out-of-range";
    /// `on tcp/9000-8000`
    REVERSED_RANGE = "E0008", "reversed-range";
    /// `to 10.0.0.0/8 except (192.168.0.0/16)`
    EXCEPT_OUTSIDE_CIDR = "E0009", "except-outside-cidr";
    /// `on icmp/1-10`: ICMP has types, not ports or ranges
    PORTS_ON_PORTLESS_PROTOCOL = "E0010", "ports-on-portless-protocol";
    /// `on tcp/echo-request`
    ICMP_TYPE_ON_PORT_PROTOCOL = "E0011", "icmp-type-on-port-protocol";
    /// `on icmp/echo-sideways`, `on icmp/300`
    UNKNOWN_ICMP_TYPE = "E0012", "unknown-icmp-type";
    /// `select {-app=web}`
    INVALID_LABEL_KEY = "E0013", "invalid-label-key";
    /// `select {app=web!}`
    INVALID_LABEL_VALUE = "E0014", "invalid-label-value";
    /// `from $web` where `web` is a `ports` definition
    WRONG_KIND = "E0015", "wrong-kind";
    /// `from` in an egress section, `to` in an ingress section
    WRONG_PEER_DIRECTION = "E0016", "wrong-peer-direction";
    /// `ipv4 fd00::1`, `ipv4 10.0.0.256`
    INVALID_ADDRESS = "E0017", "invalid-address";
    /// two endpoints with `ipv4 10.200.0.1`
    DUPLICATE_ADDRESS = "E0018", "duplicate-address";
    /// `endpoint app { labels {id=app} }`: no address
    ENDPOINT_WITHOUT_ADDRESS = "E0019", "endpoint-without-address";
    /// `ipv4` given twice in one endpoint
    DUPLICATE_FIELD = "E0020", "duplicate-field";
    /// `mac 02:00:00`
    INVALID_MAC = "E0021", "invalid-mac";
    /// `peers a = $b` and `peers b = $a`
    CYCLIC_DEFINITION = "E0022", "cyclic-definition";
    /// `labels {app=a, app=b}`
    DUPLICATE_LABEL_KEY = "E0023", "duplicate-label-key";
    /// `port http = tcp/80-90` in an endpoint: a named port is one port
    INVALID_NAMED_PORT = "E0024", "invalid-named-port";
    /// two `ingress { }` sections in one policy
    DUPLICATE_SECTION = "E0025", "duplicate-section";
    /// `to 10.0.0.0/8 except (fd00::/64)`
    MIXED_ADDRESS_FAMILY = "E0026", "mixed-address-family";
    /// `node { }` twice in one policy set
    DUPLICATE_NODE = "E0027", "duplicate-node";
    /// `iface polc-frontend-primary` (more than 15 bytes)
    INVALID_DEVICE_NAME = "E0028", "invalid-device-name";

    /// an `allow` whose every flow a `deny` of the same policy and direction also matches
    ALLOW_SHADOWED_BY_DENY = "W0001", "allow-shadowed-by-deny";
    /// the same rule twice (same action, peers and ports) in one section
    DUPLICATE_RULE = "W0002", "duplicate-rule";
    /// a policy whose selector matches no endpoint of the inventory
    POLICY_SELECTS_NOTHING = "W0003", "policy-selects-nothing";
    /// a `ports`, `selector` or `peers` definition nobody uses
    UNUSED_DEFINITION = "W0004", "unused-definition";
    /// `on tcp/http` where no endpoint names a port `http`
    UNKNOWN_NAMED_PORT = "W0005", "unknown-named-port";
    /// a selector that can match nothing: `{app=a, app=b}`, `{app, !app}`
    CONTRADICTORY_SELECTOR = "W0006", "contradictory-selector";
    /// a policy with neither `ingress` nor `egress`: it changes nothing
    POLICY_WITHOUT_SECTIONS = "W0007", "policy-without-sections";
}

pub fn by_id(id: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.id == id)
}
