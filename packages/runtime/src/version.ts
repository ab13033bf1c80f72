/** The version every worker reports to the NATS services API. */
export const TOOLBUS_VERSION = "0.1.0";
