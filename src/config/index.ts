/** The public surface of src/config. */
export * from "./compile";
