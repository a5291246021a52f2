# The exec service's raw command-line splitter.
if(TARGET sg_exec)
  sg_add_fuzzer(fuzz_argv_split ${CMAKE_CURRENT_LIST_DIR}/fuzz_argv_split.c sg_exec)
endif()
