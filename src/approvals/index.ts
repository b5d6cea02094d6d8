export * from "../shared/jcs";
export * from "./binding";
export * from "./store";
