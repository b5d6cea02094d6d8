/** The public surface of src/identity. */
export * from "./identity";
