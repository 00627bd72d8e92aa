//! One-off experiments: measurements that answered a question once and stay runnable so the
//! answer can be checked again. Nothing else in the instrument imports them.

pub mod recv;
