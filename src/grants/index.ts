/** The public surface of src/grants. */
export * from "./issuer";
