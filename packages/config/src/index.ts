export { loadConfig, compileConfig, ConfigError, isConfigError, isLlmBackend, LLM_DEFAULTS } from "./compile.js";
export { Secret } from "./secret.js";
export type {
  ToolbusConfig,
  BackendConfig,
  BackendCacheConfig,
  CacheConfig,
  ChatLogConfig,
  ToolOverride,
  McpStdioBackendConfig,
  McpHttpBackendConfig,
  LlmBackendConfig,
  LaunchConfig,
  ConfigFlags,
  LoadConfigOptions,
  GatewayConfig,
} from "./compile.js";
export { cacheRule } from "./cache-rule.js";
export type { CacheRule } from "./cache-rule.js";
export { parseDuration } from "./duration.js";
export { Profile, PROFILE_DEFAULTS } from "./profiles.js";
export type { ProfileDefaults, HealthDefaults } from "./profiles.js";
export { ConfigFileSchema } from "./schema.js";
export type { ConfigFile } from "./schema.js";
