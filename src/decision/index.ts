/** The public surface of src/decision. */
export * from "./decider";
