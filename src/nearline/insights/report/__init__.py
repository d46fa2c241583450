"""``nearline report``: one page of what users felt, read from the gateway's request log."""
