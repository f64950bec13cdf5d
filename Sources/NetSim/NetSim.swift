// NetSim: placeholder until the simulator lands.
