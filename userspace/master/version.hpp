// The version of this build: CMake's project(VERSION) and the git revision of the source tree
// at build time ("unknown" when it was not built from a git checkout).
#pragma once

namespace steerchat::master {

extern const char* const kVersion;      // "0.1.0"
extern const char* const kGitRevision;  // "b586b4d5e0c1..." ("-dirty" if modified), or "unknown"

}  // namespace steerchat::master
