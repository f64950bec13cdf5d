/// ProbeConfig: placeholder until the configuration loader lands.
