//! The adapter types this binary knows.

use bridge_core::AdapterFactory;

/// Every adapter factory compiled into this binary.
pub fn factories() -> Vec<Box<dyn AdapterFactory>> {
    vec![
        Box::new(bridge_example_linechat::LinechatFactory),
        Box::new(bridge_xmpp::XmppFactory),
        Box::new(bridge_matrix::MatrixFactory),
        Box::new(bridge_mimi::MimiFactory),
    ]
}

/// The factory of an adapter type.
pub fn factory(type_name: &str) -> Option<Box<dyn AdapterFactory>> {
    factories().into_iter().find(|f| f.type_name() == type_name)
}

/// The known type names, for error messages.
pub fn type_names() -> Vec<&'static str> {
    factories().iter().map(|f| f.type_name()).collect()
}
