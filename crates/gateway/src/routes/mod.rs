pub mod accounts;
pub mod instance;
pub mod oauth;
