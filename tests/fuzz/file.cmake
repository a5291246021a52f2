# The file service's name check, which guards every path the service opens.
if(TARGET sg_file)
  sg_add_fuzzer(fuzz_file_name ${CMAKE_CURRENT_LIST_DIR}/fuzz_file_name.c sg_file)
endif()
