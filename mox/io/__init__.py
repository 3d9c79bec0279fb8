"""The IO seam: every clock read, random draw, file and network operation goes through here.

`interfaces` defines the protocols; `real` and `uring` implement them on the machine,
`sim` implements them in simulated time with faults. A core (consensus, storage format
logic) never imports `real`, `uring` or `sim` directly: it is handed an implementation.
"""
