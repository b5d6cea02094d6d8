/** The public surface of src/audit. */
export * from "./auditor";
