# libethermem-preload.so, the shim of `ethermem run`. Included by
# src/lib/CMakeLists.txt once the ethermem library exists (and by
# src/map/CMakeLists.txt when the directory order already provides it).
include_guard(GLOBAL)
add_library(ethermem-preload SHARED ${CMAKE_SOURCE_DIR}/src/map/preload.c)
set_target_properties(ethermem-preload PROPERTIES OUTPUT_NAME ethermem-preload PREFIX lib)
target_link_libraries(ethermem-preload PRIVATE ethermem ${CMAKE_DL_LIBS} Threads::Threads)
