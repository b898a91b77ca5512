"""The rooms :class:`strongroom.api.Strongroom` is made of: the audited-call machinery, the
reads, the writes and the audit log's reads, one module each."""
