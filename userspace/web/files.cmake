# The files of web/ embedded into the binary (userspace/web/CMakeLists.txt and the libFuzzer
# project in tests/fuzz both include this list).
set(STEERCHAT_WEB_FILES index.html chat.js status.html status.js style.css favicon.svg)
