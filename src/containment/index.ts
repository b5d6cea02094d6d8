/** The public surface of src/containment. */
export * from "./containment";
