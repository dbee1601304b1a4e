# Run at every build (cmake -P): writes OUTPUT from version.cpp.in with VERSION and the source
# tree's git revision. configure_file leaves OUTPUT untouched when nothing changed, so an unchanged
# revision rebuilds nothing.
set(STEERCHAT_GIT_REVISION unknown)
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} rev-parse HEAD
                  OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE rc ERROR_QUIET)
  if(rc EQUAL 0 AND rev MATCHES "^[0-9a-f]+$")
    set(STEERCHAT_GIT_REVISION ${rev})
    execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} diff --quiet HEAD --
                    RESULT_VARIABLE dirty ERROR_QUIET)
    if(dirty EQUAL 1)
      string(APPEND STEERCHAT_GIT_REVISION "-dirty")
    endif()
  endif()
endif()
set(STEERCHAT_VERSION ${VERSION})
configure_file(${SOURCE_DIR}/userspace/master/version.cpp.in ${OUTPUT} @ONLY)
