"""fedprofile: the shared contract, protocol, segment model and CLI of the federation."""
