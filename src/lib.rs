//! formwright fills and submits insurer agent-portal forms through a real
//! browser, and never submits the same form twice.

pub mod browser;
pub mod captcha;
pub mod profile;
