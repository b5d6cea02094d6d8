export * from "./jcs";
export * from "./binding";
export * from "./store";
