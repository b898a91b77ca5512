"""Value sources beside the store's own: where a ManagedSecret key's value comes from when it is
not generated or set out-of-band. One module per source (DESIGN.md, "Where the next capabilities
go"); :mod:`strongroom.sync` calls them and knows none of their details.
"""
