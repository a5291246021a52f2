# The gateway's request checks (gateway/validate.c, pure): JSON bodies of echo and exec, exec argv,
# file names and query values as they come off the wire, checked against the file service's rules.
if(TARGET sg_exec AND TARGET sg_file)
  sg_add_fuzzer(fuzz_gateway_request ${CMAKE_CURRENT_LIST_DIR}/fuzz_gateway_request.c sg_exec sg_file
                PkgConfig::JANSSON)
  target_sources(fuzz_gateway_request PRIVATE ${PROJECT_SOURCE_DIR}/gateway/validate.c)
  target_include_directories(fuzz_gateway_request PRIVATE ${PROJECT_SOURCE_DIR}/gateway)
  target_compile_definitions(fuzz_gateway_request PRIVATE SG_HAVE_EXEC)
endif()

# tus's Upload-Metadata and Upload-Checksum (gateway/validate_tus.c, pure), and its base64 decoder.
sg_add_fuzzer(fuzz_tus_headers ${CMAKE_CURRENT_LIST_DIR}/fuzz_tus_headers.c sgproto)
target_sources(fuzz_tus_headers PRIVATE ${PROJECT_SOURCE_DIR}/gateway/validate_tus.c)
target_include_directories(fuzz_tus_headers PRIVATE ${PROJECT_SOURCE_DIR}/gateway)
