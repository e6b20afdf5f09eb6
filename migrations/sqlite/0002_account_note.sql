-- A standing remark about an account shown by status, e.g. "the server has no Sent folder".
ALTER TABLE mail_accounts ADD COLUMN note TEXT NOT NULL DEFAULT '';
