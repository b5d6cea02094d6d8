/** The public surface of src/errors. */
export * from "./registry";
