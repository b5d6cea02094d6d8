/** The public surface of src/bundles. */
export * from "./manager";
