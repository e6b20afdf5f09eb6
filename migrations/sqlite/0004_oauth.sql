-- XOAUTH2 accounts: the token endpoint and client, and the current access token
-- (sealed, like the refresh token kept in `secret`).
ALTER TABLE mail_accounts ADD COLUMN oauth_token_url TEXT NOT NULL DEFAULT '';
ALTER TABLE mail_accounts ADD COLUMN oauth_client_id TEXT NOT NULL DEFAULT '';
ALTER TABLE mail_accounts ADD COLUMN oauth_client_secret BLOB    NOT NULL DEFAULT x'';
ALTER TABLE mail_accounts ADD COLUMN access_token BLOB    NOT NULL DEFAULT x'';
ALTER TABLE mail_accounts ADD COLUMN access_token_expires_at INTEGER NOT NULL DEFAULT 0;
