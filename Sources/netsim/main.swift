print("netsim: not built yet")
